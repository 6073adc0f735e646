"""How a sandboxed child's end becomes an honest error: which limit stopped it, which signal
killed it (and whether the kernel's OOM killer did), which stage ran out of time, or
whether automodel's own side broke before any generated code ran."""

from __future__ import annotations

from automodel.sandbox.child_files import EventLog
from automodel.sandbox.supervisor import ChildOutcome

ENDING_ALLOWANCE = 15.0       # s a child that said it is done or failed gets to exit


def limit_error(outcome: ChildOutcome, phase: str, module: str | None, stderr: str) -> dict | None:
    """The error for a child the supervisor stopped or that died from a signal; None for a plain exit."""
    kinds = {"processes": "ProcessLimit", "disk": "DiskLimit", "files": "FileLimit"}
    if outcome.reason == "exited" and outcome.exit_code != 0 and outcome.forks_refused:
        return {
            "phase": phase,
            "module": module,
            "type": "ProcessLimit",
            "traceback": stderr,
            "message": f"the pipeline tried to start more processes than its limit allows (the kernel refused "
            f"{outcome.forks_refused} of them; {outcome.peak_processes} were running at most) and failed. "
            "Do not start processes in a loop; use at most a few DataLoader workers.",
        }
    if outcome.reason in kinds:
        return {
            "phase": phase,
            "module": module,
            "type": kinds[outcome.reason],
            "message": outcome.message,
            "traceback": stderr,
        }
    if outcome.reason == "memory":
        return {
            "phase": phase,
            "module": module,
            "type": "OutOfMemory",
            "message": outcome.message,
            "traceback": stderr,
        }
    sig = outcome.signal
    if outcome.reason == "exited" and sig == "SIGKILL" and outcome.oom_kills:
        return {
            "phase": phase,
            "module": module,
            "type": "OutOfMemory",
            "traceback": stderr,
            "message": f"the kernel's out-of-memory killer killed the pipeline's process (peak "
            f"{outcome.peak_memory / 2**20:.0f} MB seen). Use a smaller batch size or model.",
        }
    if outcome.reason == "exited" and sig:
        return {
            "phase": phase,
            "module": module,
            "type": "Killed",
            "traceback": stderr,
            "message": f"the pipeline's process was killed by {sig}, not by automodel's limits and not by the kernel's "
            f"out-of-memory killer (peak memory {outcome.peak_memory / 2**20:.0f} MB, "
            f"{outcome.peak_processes} processes): something in the pipeline, or outside, sent it.",
        }
    return None


def status_of(error: dict) -> str:
    if error["type"] == "OutOfMemory":
        return "oom"
    return "contract_error" if error["phase"] in ("import", "contract", "static") else "failed"


def timeout_error(stage: str, events: EventLog, config, stderr: str) -> dict:
    if stage == "preflight":
        module = "train" if "contract_ok" in events.seen_at else ("model" if "data_ready" in events.seen_at else None)
        message = (
            f"the preflight (import, contract check and {config.preflight_steps} training batches on "
            f"{config.preflight_subset} images) did not finish within {config.preflight_limit:.0f} s (last event: "
            f"{events.last_phase or 'none'}). Check for an endless loop or a blocking call, and make train() check "
            "ctx.should_stop() at every batch."
        )
        return {"phase": "preflight", "module": module, "type": "Timeout", "message": message, "traceback": stderr}
    if stage == "ending":
        return {
            "phase": events.last_phase or "train",
            "module": None,
            "type": "Timeout",
            "traceback": stderr,
            "message": f"the sandboxed process finished its work but did not exit within {ENDING_ALLOWANCE:.0f} s "
            "(a thread or subprocess it started kept it alive), so it was killed.",
        }
    return {
        "phase": "train",
        "module": "train",
        "type": "Timeout",
        "traceback": stderr,
        "message": f"train() ran past its {config.time_limit:.0f} s budget and could not be interrupted and saved "
        "within "
        f"{config.grace() + config.kill_grace:.0f} s more, so the whole process tree was killed. Check "
        "ctx.should_stop() at every batch and return promptly; do not catch every exception or ignore signals.",
    }


def harness_error(events: EventLog, outcome: ChildOutcome, config, stderr: str) -> dict:
    """The child failed before it ran any generated code: the sandbox, the staged data or the harness broke."""
    if outcome.reason == "timeout":
        what = f"the sandboxed harness did not get its data ready within {config.preflight_limit:.0f} s"
    else:
        sig = outcome.signal
        what = f"the sandboxed harness {'died from ' + sig if sig else 'exited with code ' + str(outcome.exit_code)}"
    return {
        "phase": "sandbox",
        "module": None,
        "type": "HarnessError",
        "traceback": stderr,
        "message": f"{what} before running any generated code (last event: "
        f"{events.last_phase or 'none (it never started)'}). "
        "This is a problem of automodel's side (the sandbox, the staged data in the run's data/ folder, or the "
        "machine), not of the pipeline; its stderr ends with the lines below.",
    }
