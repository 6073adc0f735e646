"""One iteration: a static check, a training process, a prediction process, honest scoring.

    result = run_iteration(iter_dir, bundle, RunConfig(time_limit=60))

iter_dir holds data.py, model.py and train.py. Two sandboxed children run in
turn, each writing only into its own work folder inside iter_dir:

1. training (`work/`): imports the modules, checks them on a tiny batch, runs
   a preflight, trains, saves model.pt. It sees the training split with labels.
   The parent ends it: a deadline set from its own clock when it reads that the
   preflight passed, then the time limit and the graces. A child's event can
   only bring that deadline closer, never push it back, so a forged
   "train_done" buys no extra time (there is no prediction stage to slip into).
2. prediction (`predict/`): loads model.pt and predicts the validation, test
   and predict images and a training sample. It sees those images only, no
   labels, and has its own allowance.

After each child the parent moves the files it expects (regular files only,
never through links) into iter_dir and deletes the work folder without
recursion, so whatever the child left (directories named like our files, a
tree thousands of levels deep, links out of the sandbox) never reaches a
trusted step. The parent then scores the predictions itself (scoring.py) and
writes metrics.json. Nothing the generated code does makes this raise.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from automodel.core import ErrorInfo, IterationResult, SandboxInfo
from automodel.files import atomic_write_json, clear_for_write, read_untrusted_text, remove_tree
from automodel.sandbox import contracts, scoring
from automodel.sandbox.bundle import DataBundle, train_sample_indices
from automodel.sandbox.child_files import EventLog, child_error, child_report, read_curves, tail
from automodel.sandbox.failures import ENDING_ALLOWANCE, harness_error, limit_error, status_of, timeout_error
from automodel.sandbox.levels import INSIDE_DATA, INSIDE_ITER, MISSING, Mount, layout
from automodel.sandbox.probe import choose_level, warn_if_weak
from automodel.sandbox.requests import RunConfig, child_info, child_request, train_spec
from automodel.sandbox.supervisor import ChildOutcome, run_child, signal_name

WORK, PREDICT_WORK = "work", "predict"
TRAIN_OUTPUTS = ("events.jsonl", "curves.jsonl", "error.json", "child.json", "model.pt")
# Everything a run leaves in iter_dir (removed before the next run in the same folder).
RUN_FILES = (*TRAIN_OUTPUTS, "predict_error.json", "stdout.txt", "stderr.txt", "metrics.json", "spec.json",
             "predict_spec.json")
# The first event after which the child runs generated code (it imports the modules next).
GENERATED_CODE_STARTS = "data_ready"


class TrainingClock:
    """The training child's deadline, from the parent's clock.

    Until the preflight is seen to pass: launch + preflight_limit. Then the
    training window (time limit + graces) from that moment, never later than
    launch + preflight_limit + window. A child that says it is done or failed
    gets ENDING_ALLOWANCE to exit, if that is sooner. Events only ever move the
    deadline closer."""

    def __init__(self, events: EventLog, config: RunConfig):
        self.events, self.config = events, config
        self.window = config.time_limit + config.grace() + config.kill_grace
        self.stage = "preflight"
        self.end: float | None = None

    def __call__(self, now: float, launched: float) -> tuple[str, float]:
        seen = self.events.seen_at
        if self.end is None:
            self.end = launched + self.config.preflight_limit
        passed = "preflight_ok" if self.config.preflight else "contract_ok"
        if self.stage == "preflight" and passed in seen:
            self.stage = "train"
            self.end = min(seen[passed] + self.window, launched + self.config.preflight_limit + self.window)
        said = seen.get("failed", seen.get("done"))
        if said is not None and self.stage != "ending":
            self.stage, self.end = "ending", min(self.end, said + ENDING_ALLOWANCE)
        return self.stage, self.end


def clear_run_files(iter_dir: Path) -> None:
    """Remove what an earlier run left in iter_dir (a repair reruns in the same folder)."""
    for name in RUN_FILES:
        clear_for_write(iter_dir / name)
        (iter_dir / name).unlink(missing_ok=True)
    for path in iter_dir.glob("probs_*.npy"):
        path.unlink(missing_ok=True)


def _fresh(folder: Path) -> Path:
    remove_tree(folder)
    folder.mkdir()
    return folder


def _collect(work: Path, dest: Path, names: list[str]) -> None:
    """Move the expected outputs that are regular files from the child's folder into `dest`."""
    for name in names:
        src = work / name
        try:
            if not stat.S_ISREG(os.lstat(src).st_mode):
                continue
        except OSError:
            continue
        clear_for_write(dest / name)
        os.replace(src, dest / name)


def _discard(folder: Path) -> None:
    """Delete a child's work folder; a failure here never loses the iteration (resume removes it later)."""
    try:
        remove_tree(folder)
    except OSError:
        pass


def _stderr_tail(iter_dir: Path) -> str:
    return tail(read_untrusted_text(iter_dir / "stderr.txt", 32 * 2**20)[-20000:], lines=20, chars=3000)


# ------------------------------------------------------------------ the iteration

@dataclass
class _Run:
    """What the two children of one iteration left, for building the result."""

    events: EventLog
    train: ChildOutcome | None = None
    predict: ChildOutcome | None = None
    static_s: float = 0.0

    def timings(self, total: float) -> dict[str, float]:
        """Seconds per stage from the parent's clock; the child's own breakdown of its start-up as it reported it.

        Training starts at the child's preflight_ok stamp clamped between the
        launch and when the parent read it (EventLog.when): the parent's own
        reading lags by up to a poll, more when the child holds every core."""
        seen, wall = self.events.seen_at, self.events.wall
        out: dict[str, float | None] = {"static_check": self.static_s}
        if self.train is not None:
            launched = self.train.started
            passed = self.events.when("preflight_ok" if "preflight_ok" in seen else "contract_ok", launched)
            out["startup"] = None if passed is None else passed - launched
            out["training"] = None if passed is None else launched + self.train.seconds - passed
            t0 = self.events.extra.get("start", {}).get("t0")

            def span(a, b):
                return None if a is None or b is None else max(0.0, b - a)

            out.update({
                "sandbox_start": span(launched, t0) if isinstance(t0, float) else None,
                "imports": span(t0, wall.get("imports_done")) if isinstance(t0, float) else None,
                "data_ready": span(wall.get("imports_done"), wall.get("data_ready")),
                "contract": span(wall.get("data_ready"), wall.get("contract_ok")),
                "preflight": span(wall.get("contract_ok"), wall.get("preflight_ok")),
                "first_batch": span(wall.get("train_start"), wall.get("train_first_batch")),
            })
        if self.predict is not None:
            out["prediction"] = self.predict.seconds
        out["total"] = total
        return {k: round(v, 4) for k, v in out.items() if v is not None}

    def compute(self, report: dict, cores: int) -> dict:
        """Steps, images and epochs as the child counted them, over the parent's training time and CPU measures."""
        out: dict = {k: report[k] for k in ("steps", "images", "epochs", "batched") if k in report}
        seconds = self.timings(0.0).get("training")
        if seconds and isinstance(report.get("images"), (int, float)):
            out["images_per_second"] = round(report["images"] / seconds, 1)
        if self.train is not None:
            out.update(self.train.compute("train", cores))
        return out


def run_iteration(iter_dir: Path, bundle: DataBundle, config: RunConfig = RunConfig(),
                  score: bool = True) -> IterationResult:
    """Run the pipeline in `iter_dir` (data.py, model.py, train.py) once and score it.

    Never raises for anything the generated code does: every outcome is an
    IterationResult, also written to iter_dir/metrics.json. With score=False
    (a remote node, which has no validation or test labels) a run whose
    predictions were written ends "ok" without scores: the driver scores it
    with `score_iteration`.
    """
    iter_dir = Path(iter_dir).resolve()  # the children run elsewhere: they get absolute paths only
    t_start = time.time()
    clear_run_files(iter_dir)
    level = choose_level(config.sandbox)
    run = _Run(EventLog(iter_dir / WORK / "events.jsonl"))

    def result(status: str, error: dict | None = None, **scores) -> IterationResult:
        outcomes = [o for o in (run.train, run.predict) if o is not None]
        report = child_report(iter_dir / "child.json")
        dropped: dict[str, int] = {}
        for o in outcomes:
            for name, n in o.logs_dropped.items():
                dropped[name] = dropped.get(name, 0) + n
        res = IterationResult(
            status=status,
            error=ErrorInfo.from_json(error),
            val_accuracy=scores.get("val"),
            test_accuracy=scores.get("test"),
            train_eval_accuracy=scores.get("train_eval"),
            curves=read_curves(iter_dir / "curves.jsonl"),
            timings=run.timings(time.time() - t_start),
            sandbox=SandboxInfo(level, MISSING.get(level, ()), outcomes[0].limits if outcomes else ""),
            interrupted=bool(report.get("interrupted", False)),
            used_checkpoint=bool(report.get("used_checkpoint", False)),
            exit_code=outcomes[-1].exit_code if outcomes else None,
            peak_memory_mb=round(max(o.peak_memory for o in outcomes) / 2**20, 1) if outcomes else None,
            peak_processes=max(o.peak_processes for o in outcomes) if outcomes else None,
            disk_mb=round(run.train.disk_used / 2**20, 1) if run.train else None,
            logs_truncated=dropped,
            compute=run.compute(report, config.slot().cores()),
            config=dataclasses.asdict(config)
            | {
                "cache_dir": str(config.cache_dir) if config.cache_dir else None,
                "hidden": [str(p) for p in config.hidden],
            },
        )
        atomic_write_json(iter_dir / "metrics.json", res.to_json())
        return res

    issues = contracts.check_pipeline_dir(iter_dir)
    run.static_s = time.time() - t_start
    if issues:
        first = issues[0]
        message = "\n".join(i.message for i in issues) if len(issues) > 1 else first.message
        return result(
            "contract_error",
            {
                "phase": "static",
                "module": first.module,
                "message": message,
                "type": "SyntaxError" if first.kind == "syntax" else "ContractError",
            },
        )
    warn_if_weak(level)
    hidden = tuple(p for p in (bundle.source_root, iter_dir.parent, *config.hidden) if p)

    # 1. training
    work = _fresh(iter_dir / WORK)
    inside = layout(level, work, bundle.dir, None)
    data_dir = INSIDE_DATA if level == "bwrap" else bundle.dir
    atomic_write_json(
        iter_dir / "spec.json",
        train_spec(bundle, config, iter_dir if level != "bwrap" else INSIDE_ITER, data_dir, inside.iter_dir),
    )
    for name in ("stdout.txt", "stderr.txt"):
        (iter_dir / name).write_bytes(b"")
    request = child_request(
        level, iter_dir, work, "spec.json", config, data=[Mount(bundle.dir, INSIDE_DATA)], ro=[], hidden=hidden
    )
    clock = TrainingClock(run.events, config)
    run.train = run_child(request, level, config.slot(), deadline=clock, work=work, on_poll=run.events.poll)
    run.events.poll()
    _collect(work, iter_dir, list(TRAIN_OUTPUTS))
    _discard(work)
    stderr = _stderr_tail(iter_dir)
    outcome = run.train
    if (
        GENERATED_CODE_STARTS not in run.events.seen_at
        and outcome.reason in ("exited", "timeout")
        and (outcome.exit_code != 0 or outcome.reason == "timeout")
    ):
        # The harness reports its own failure in error.json (with the traceback) when it can.
        reported = child_error(iter_dir / "error.json")
        detail = (f"{reported['type']}: {reported['message']}\n{reported['traceback']}" if reported else stderr)
        return result("harness_error", harness_error(run.events, outcome, config, detail))
    phase = run.events.last_phase if run.events.last_phase not in (None, "failed", "done") else clock.stage
    error = limit_error(outcome, phase or clock.stage, "train", stderr)
    if error is not None:
        return result(status_of(error), error)
    if outcome.reason == "timeout":
        return result("timeout", timeout_error(clock.stage, run.events, config, stderr))
    if outcome.exit_code != 0:
        error = child_error(iter_dir / "error.json") or {
            "phase": phase or "train",
            "module": None,
            "type": "Crashed",
            "traceback": stderr,
            "message": f"the sandboxed process exited with code {outcome.exit_code} after phase '{phase}' without "
            "reporting an error",
        }
        return result(status_of(error), error)
    if not (iter_dir / "model.pt").is_file():
        return result(
            "failed",
            {
                "phase": "train",
                "module": "train",
                "type": "NoModel",
                "traceback": stderr,
                "message": "training ended without leaving model.pt: the pipeline must not delete or move the files "
                "in its folder.",
            },
        )

    # 2. prediction: images only, no labels
    sets = [*bundle.sets, "train_sample"]
    pwork = _fresh(iter_dir / PREDICT_WORK)
    with open(iter_dir / "stderr.txt", "ab") as fh:
        fh.write(b"\n--- prediction process ---\n")
    pinside = layout(level, pwork, bundle.dir, None)
    spec = {
        "mode": "predict",
        "pipeline_dir": str(iter_dir if level != "bwrap" else INSIDE_ITER),
        "data_dir": str(data_dir),
        "out_dir": str(pinside.iter_dir),
        "info": child_info(bundle, config),
        "seed": int(config.seed),
        "device": config.device,
        "threads": config.slot().cores(),
        "predict_sets": sets,
        "weights": str((INSIDE_ITER if level == "bwrap" else iter_dir) / "model.pt"),
    }
    atomic_write_json(iter_dir / "predict_spec.json", spec)
    request = child_request(
        level,
        iter_dir,
        pwork,
        "predict_spec.json",
        config,
        hidden=hidden,
        data=[Mount(bundle.images(name), INSIDE_DATA / f"{name}_x.npy") for name in sets],
        ro=[(iter_dir / "model.pt", "model.pt")],
    )
    run.predict = run_child(
        request,
        level,
        config.slot(),
        work=pwork,
        deadline=lambda now, launched: ("predict", launched + config.predict_allowance),
    )
    _collect(pwork, iter_dir, [f"probs_{name}.npy" for name in sets])
    try:
        if stat.S_ISREG(os.lstat(pwork / "error.json").st_mode):
            os.replace(pwork / "error.json", iter_dir / "predict_error.json")
    except OSError:
        pass
    _discard(pwork)
    stderr = _stderr_tail(iter_dir)
    outcome = run.predict
    error = limit_error(outcome, "predict", "model", stderr)
    if error is not None:
        return result(status_of(error), error)
    if outcome.reason == "timeout":
        return result(
            "timeout",
            {
                "phase": "predict",
                "module": "model",
                "type": "Timeout",
                "traceback": stderr,
                "message": "predicting the validation and test images took more than "
                f"{config.predict_allowance:.0f} s; "
                "the model is probably far too slow for this time budget.",
            },
        )
    if outcome.exit_code != 0:
        error = child_error(iter_dir / "predict_error.json") or {
            "phase": "predict",
            "module": "model",
            "type": "Crashed",
            "traceback": stderr,
            "message": f"the prediction process exited with code {outcome.exit_code} without reporting an error",
        }
        return result(status_of(error), error)

    # 3. trusted scoring
    if not score:
        return result("ok")
    error, scores = _score(iter_dir, bundle)
    return result("failed", error) if error else result("ok", **scores)


def _score(iter_dir: Path, bundle: DataBundle) -> tuple[dict | None, dict]:
    """(error, scores): the predictions in iter_dir against the labels this process kept."""
    try:
        num_classes = int(bundle.info["num_classes"])
        val = scoring.score_file(iter_dir / "probs_val.npy", bundle.val_y, num_classes)
        test = (
            scoring.score_file(iter_dir / "probs_test.npy", bundle.test_y, num_classes)
            if "test" in bundle.sets
            else None
        )
        if "predict" in bundle.sets:
            scoring.load_probs(iter_dir / "probs_predict.npy", bundle.counts["predict"], num_classes)
    except scoring.ScoringError as exc:
        return {"phase": "score", "module": None, "type": "BadPredictions", "message": str(exc)}, {}
    return None, {"val": round(val, 6), "test": None if test is None else round(test, 6),
                  "train_eval": _train_sample_accuracy(iter_dir, bundle, num_classes)}


def score_iteration(iter_dir: Path, bundle: DataBundle, res: IterationResult) -> IterationResult:
    """Score a run made with score=False elsewhere (its files now in iter_dir), as run_iteration would have,
    and rewrite its metrics.json."""
    if res.status != "ok":
        return res
    error, scores = _score(Path(iter_dir).resolve(), bundle)
    if error:
        res = dataclasses.replace(res, status="failed", error=ErrorInfo.from_json(error))
    else:
        res = dataclasses.replace(res, val_accuracy=scores["val"], test_accuracy=scores["test"],
                                  train_eval_accuracy=scores["train_eval"])
    atomic_write_json(Path(iter_dir) / "metrics.json", res.to_json())
    return res


def _train_sample_accuracy(iter_dir: Path, bundle: DataBundle, num_classes: int) -> float | None:
    """A diagnostic, not a score: missing or malformed predictions just leave it unknown."""
    try:
        return round(
            scoring.score_file(iter_dir / "probs_train_sample.npy", bundle.train_sample_labels(), num_classes), 6
        )
    except (OSError, ValueError, IndexError, scoring.ScoringError):
        return None


__all__ = ["RunConfig", "run_iteration", "score_iteration", "train_sample_indices", "signal_name"]
