"""Run a trusted harness script on a run's best pipeline INSIDE the sandbox.

`predict` and `export` execute the generated data.py/model.py again, so they
obey the same rule as training: that code only ever runs in a sandboxed child
(see sandbox.py), never in this process. This module lays out a private work
folder (the pipeline, the weights, spec.json) and a read-only data folder,
starts the harness (sandbox_child.py in "predict" mode, or export_child.py) at
the best isolation level available, watches its wall clock and memory, and
kills its whole process tree when it ends.

    result = run_tool(HarnessScript.PREDICT, work, data, spec, timeout=600)
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from automodel.errors import RunError
from automodel.files import (
    UntrustedFileError,
    atomic_write_bytes,
    atomic_write_json,
    read_untrusted,
    read_untrusted_text,
)
from automodel.sandbox import scoring
from automodel.sandbox.levels import (
    CHILD_HELPERS,
    CHILD_SCRIPT,
    INSIDE_HARNESS,
    MISSING,
    Mount,
    Request,
    SandboxError,
    base_env,
    layout,
    python_mounts,
)
from automodel.sandbox.limits import Slot
from automodel.sandbox.probe import choose_level, warn_if_weak
from automodel.sandbox.supervisor import run_child

PACKAGE = Path(__file__).resolve().parent
SANDBOX_CHILD = CHILD_SCRIPT
EXPORT_CHILD = PACKAGE / "export_child.py"
# export_child.py imports child.py from its own folder (no automodel imports inside).
INSIDE_SANDBOX_CHILD = Path("/sandbox/child.py")
STDERR_TAIL = 3000   # characters of the child's stderr kept for error messages


@dataclass(frozen=True)
class ToolResult:
    ok: bool
    exit_code: int | None
    timed_out: bool
    out_of_memory: bool
    error: dict[str, Any] | None     # the child's error.json (phase, module, type, message, traceback)
    stderr_tail: str
    seconds: float
    sandbox: str                      # isolation level used
    missing: tuple[str, ...]          # protections not in force at that level

    def describe(self) -> str:
        """One paragraph saying what went wrong, for error messages."""
        if self.timed_out:
            return f"it did not finish within its time limit and was stopped after {self.seconds:.0f} s"
        if self.out_of_memory:
            return "it used more memory than allowed and was stopped"
        if self.error:
            where = f"{self.error.get('module')}.py" if self.error.get("module") else "the harness"
            return f"{where} raised {self.error.get('type')}: {self.error.get('message')}"
        return f"the sandboxed process exited with code {self.exit_code}; its last output was:\n{self.stderr_tail}"


def make_workdir(parent: Path | None = None) -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="automodel-tool-", dir=parent))


def pipeline_workdir(best_dir: Path) -> tuple[Path, Path, Path]:
    """A fresh scratch folder with data/ (for the tool's inputs) and pipeline/ (a copy of best/).

    Returns (work, data, pipeline); the caller removes `work` when done."""
    work = make_workdir()
    data, pipe = work / "data", work / "pipeline"
    data.mkdir()
    pipe.mkdir()
    copy_pipeline(best_dir, pipe)
    return work, data, pipe


def copy_pipeline(best_dir: Path, work: Path) -> None:
    """The three modules and the weights of best/, as plain files in `work`."""
    for name in ("data.py", "model.py", "train.py", "model.pt"):
        shutil.copyfile(best_dir / name, work / name)


def run_tool(script: Path, work: Path, data: Path, spec: dict[str, Any], *, timeout: float, threads: int = 0,
             hidden: tuple[Path, ...] = (), memory_limit: int | None = None, level: str | None = None) -> ToolResult:
    """Run `script SPEC` in the sandbox with `work` writable and `data` read-only.

    `spec` gets pipeline_dir, out_dir, data_dir and weights (paths as the child
    sees them) filled in here; everything else is the caller's.
    """
    work, data = Path(work).resolve(), Path(data).resolve()
    try:
        level = choose_level(level)
    except SandboxError as err:
        raise RunError(f"Cannot start the sandbox: {err}") from None
    warn_if_weak(level)
    slot = Slot(threads=threads, memory=memory_limit)
    lay = layout(level, work, data, None)
    full = dict(spec, pipeline_dir=str(lay.iter_dir), out_dir=str(lay.iter_dir), data_dir=str(lay.data_dir),
                weights=str(lay.iter_dir / "model.pt"), threads=slot.cores())
    atomic_write_json(work / "spec.json", full)
    for name in ("stdout.txt", "stderr.txt"):
        (work / name).write_bytes(b"")

    if level == "bwrap":
        env = base_env(slot.cores())
        harness = INSIDE_HARNESS
        mounts = [*python_mounts(tuple(hidden)), Mount(data, lay.data_dir), Mount(work, lay.iter_dir, writable=True)]
        # The harness, the pipeline and the weights are laid read-only over the writable folder.
        ro_files = [Mount(Path(script).resolve(), INSIDE_HARNESS), Mount(SANDBOX_CHILD, INSIDE_SANDBOX_CHILD)]
        ro_files += [Mount(helper, INSIDE_SANDBOX_CHILD.with_name(helper.name)) for helper in CHILD_HELPERS]
        ro_files += [Mount(work / name, lay.iter_dir / name)
                     for name in ("data.py", "model.py", "train.py", "model.pt", "spec.json")]
    else:
        scratch = work / ".tmp"
        scratch.mkdir(exist_ok=True)
        env = base_env(slot.cores(), home=str(scratch), tmp=str(scratch))
        harness = Path(script).resolve()
        mounts, ro_files = [], []
    request = Request(
        argv=(sys.executable, "-I", "-B", str(harness), str(lay.iter_dir / "spec.json")),
        cwd=lay.iter_dir, stdout=work / "stdout.txt", stderr=work / "stderr.txt",
        mounts=tuple(mounts), ro_files=tuple(ro_files), env=env, hidden=tuple(hidden),
        gpu=str(spec.get("device", "cpu")).startswith("cuda"), marker=uuid.uuid4().hex,
    )
    outcome = run_child(request, level, slot, deadline=lambda now, launched: ("run", launched + timeout), work=work)
    error = _read_error(work / "error.json")
    tail = read_untrusted_text(work / "stderr.txt", 1_000_000)[-STDERR_TAIL:]
    timed_out, oom = outcome.reason == "timeout", outcome.reason == "memory"
    ok = outcome.reason == "exited" and outcome.exit_code == 0 and error is None
    return ToolResult(ok, outcome.exit_code, timed_out, oom, error, tail, outcome.seconds, level,
                      MISSING.get(level, ()))


def _read_error(path: Path) -> dict[str, Any] | None:
    text = read_untrusted_text(path, 100_000)
    if not text:
        return None
    try:
        raw = json.loads(text)
    except ValueError:
        return {"type": "Error", "message": "the child wrote an unreadable error.json", "module": None}
    if not isinstance(raw, dict):
        return None
    return {
        k: str(raw.get(k, ""))[:2000] if raw.get(k) is not None else None
        for k in ("phase", "module", "type", "message", "traceback")
    }


def copy_child_file(src: Path, dest: Path, max_bytes: int = scoring.MAX_FILE_BYTES) -> int:
    """Copy a regular file the child wrote to `dest` without following links; returns its size."""
    try:
        data = read_untrusted(src, max_bytes=max_bytes)
    except UntrustedFileError as err:
        raise scoring.ScoringError(str(err)) from None
    atomic_write_bytes(dest, data)
    return len(data)
