"""TensorBoard logs of a run, written by trusted code from what the harness recorded.

    tb/iter_NNN/   one TensorBoard run per iteration: its training curves
                   (train/loss, train/accuracy, lr, ... as logged through
                   ctx.log and kept in metrics.json) plus the harness's own
                   scores (harness/val_accuracy, harness/test_accuracy) at the
                   last step and the phase timings (time/<phase>_s)
    tb/run/        one point per iteration: run/val_accuracy, run/test_accuracy,
                   run/best_val_accuracy (best kept so far), run/accepted,
                   run/seconds, run/tokens

`tensorboard --logdir workspace/<run>` shows both. Each function rewrites its
folder from scratch, so calling it again (after a resume, from `automodel
report`) never duplicates points.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

from automodel.core import JournalRecord
from automodel.files import read_json
from automodel.search.workspace import RunDir, iter_name

TB_DIR = "tb"
RUN_TB = "run"
log = logging.getLogger(__name__)


def _writer(folder: Path):
    # Imported here: torch is heavy and only needed when logs are written.
    from torch.utils.tensorboard import SummaryWriter

    if folder.exists():
        shutil.rmtree(folder)  # a rewrite, not an append: points must not repeat
    folder.mkdir(parents=True)
    return SummaryWriter(log_dir=str(folder))


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _records(run_path: Path) -> dict[int, JournalRecord]:
    return {r.iteration: r for r in RunDir(Path(run_path)).iterations()}


def log_iteration(run_path: Path, n: int) -> Path | None:
    """Write tb/iter_NNN/ for iteration n from its metrics.json; None when it has none."""
    run_path = Path(run_path)
    metrics_path = run_path / iter_name(n) / "metrics.json"
    if not metrics_path.is_file():
        return None
    try:
        metrics = read_json(metrics_path)
    except ValueError:
        log.warning("%s is not valid JSON; no TensorBoard log for iteration %d", metrics_path, n)
        return None
    folder = run_path / TB_DIR / iter_name(n)
    writer = _writer(folder)
    try:
        last_step = 0
        for tag, points in sorted((metrics.get("curves") or {}).items()):
            for point in points or []:
                if not isinstance(point, (list, tuple)) or len(point) != 2:
                    continue
                step, value = _finite(point[0]), _finite(point[1])
                if step is None or value is None:
                    continue
                writer.add_scalar(str(tag), value, int(step))
                last_step = max(last_step, int(step))
        # The harness's scores, not the training code's: at the end of training.
        for key in ("val_accuracy", "test_accuracy"):
            value = _finite(metrics.get(key))
            if value is not None:
                writer.add_scalar(f"harness/{key}", value, last_step)
        for phase, seconds in sorted((metrics.get("timings") or {}).items()):
            value = _finite(seconds)
            if value is not None:
                writer.add_scalar(f"time/{phase}_s", value, 0)
        record = _records(run_path).get(n)
        if record is not None:
            writer.add_text("iteration", _describe(record), 0)
    finally:
        writer.close()
    return folder


def _describe(record: JournalRecord) -> str:
    who = record.target or "-"
    kept = "kept" if record.accepted else "not kept"
    return f"iteration {record.iteration} ({who}, {record.status}, {kept}): {record.instruction or ''}"


def log_run(run_path: Path) -> Path:
    """Write tb/run/: the run-level scalars, one step per finished iteration."""
    run_path = Path(run_path)
    writer = _writer(run_path / TB_DIR / RUN_TB)
    best: float | None = None
    try:
        for n, record in sorted(_records(run_path).items()):
            val = _finite(record.val_accuracy)
            test = _finite(record.test_accuracy)
            if val is not None:
                writer.add_scalar("run/val_accuracy", val, n)
            if test is not None:
                writer.add_scalar("run/test_accuracy", test, n)
            if record.accepted and val is not None:
                best = val if best is None else max(best, val)
            if best is not None:
                writer.add_scalar("run/best_val_accuracy", best, n)
            writer.add_scalar("run/accepted", 1.0 if record.accepted else 0.0, n)
            seconds = _finite(record.seconds)
            if seconds is not None:
                writer.add_scalar("run/seconds", seconds, n)
            writer.add_scalar("run/tokens", float(record.tokens or 0), n)
            cost = _finite(record.cost_usd)
            if cost is not None:
                writer.add_scalar("run/cost_usd", cost, n)
    finally:
        writer.close()
    return run_path / TB_DIR / RUN_TB


def log_all(run_path: Path) -> list[Path]:
    """(Re)write the logs of every finished iteration and of the run."""
    run_path = Path(run_path)
    folders = [f for n in sorted(_records(run_path)) if (f := log_iteration(run_path, n)) is not None]
    folders.append(log_run(run_path))
    return folders


def update_after_iteration(run_path: Path, n: int) -> None:
    """For the loop, after iteration n's final journal record: never raises, because
    TensorBoard logs are a convenience and must not stop a run."""
    try:
        log_iteration(run_path, n)
        log_run(run_path)
    except Exception as err:  # noqa: BLE001 - logged, and `automodel report` rewrites them
        log.warning("could not write TensorBoard logs for iteration %d (%s: %s)", n, type(err).__name__, err)
