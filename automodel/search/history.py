"""The bounded summary of past iterations that the Performance Analyst reads.

Whatever the number of iterations, the Analyst sees: the dataset facts, the
budget, the best attempt (its module summaries and training curve), the last
`recent` attempts, failures grouped by cause, the edits already tried on
the current best, and those rejected on the earlier bests it grew from.
Validation scores only: test scores never reach an agent.
"""

from __future__ import annotations

import json
from typing import Any

from automodel.core import MODULES, History, JournalRecord
from automodel.search.changes import change_label
from automodel.search.workspace import RunDir, compute_figures

RECENT = 5          # attempts shown in full
CURVE_POINTS = 12   # points per training curve shown for the best attempt
TRIED_MAX = 30      # edits listed as already tried on the best
MESSAGE_CHARS = 300
# What each attempt shows of its compute: enough to tell a worse change from a starved run.
RECENT_COMPUTE = ("steps", "epochs", "images_per_second", "steal_share")


def tail_mean(points: list[list[float]], fraction: float = 0.2) -> float | None:
    """Mean of the last `fraction` of a curve's values (a steadier end value than the last point)."""
    if not points:
        return None
    k = max(1, int(len(points) * fraction))
    vals = [p[1] for p in points[-k:]]
    return sum(vals) / len(vals)


def downsample(points: list[list[float]], n: int = CURVE_POINTS) -> list[list[float]]:
    if len(points) <= n:
        return [[int(s), round(float(v), 4)] for s, v in points]
    step = (len(points) - 1) / (n - 1)
    return [[int(points[round(i * step)][0]), round(float(points[round(i * step)][1]), 4)] for i in range(n)]


def _short(text: str | None) -> str | None:
    if not text:
        return text
    text = " ".join(str(text).split())
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def failure_cause(record: JournalRecord) -> str:
    err = record.error or {}
    if record.status in ("timeout", "oom"):
        return f"{record.status} in {err.get('module') or 'train'}"
    return f"{err.get('type') or record.status} in {err.get('module') or '?'}.py ({err.get('phase') or '?'})"


def lineage(by_iter: dict[int, JournalRecord], iteration: int | None) -> list[int]:
    """`iteration`, its parent, its parent's parent, ... back to the Architect's pipeline."""
    chain: list[int] = []
    while iteration is not None and iteration in by_iter and iteration not in chain:
        chain.append(iteration)
        iteration = by_iter[iteration].parent
    return chain


def _module(run: RunDir, iteration: int | None, target: str) -> str | None:
    path = run.iter_dir(iteration) / f"{target}.py" if iteration is not None else None
    try:
        return path.read_text(encoding="utf-8") if path is not None and path.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None


def change_of(run: RunDir, record: JournalRecord) -> str | None:
    """What the record's edit changed in its module, named from the code (automodel.search.changes)."""
    if record.target not in MODULES or record.parent is None:
        return None
    return change_label(record.target, _module(run, record.parent, record.target),
                        _module(run, record.iteration, record.target), record.instruction or "")


def _compute(run: RunDir, record: JournalRecord) -> dict[str, Any]:
    figures = {k: v for k, v in run.compute(record.iteration).items() if k in RECENT_COMPUTE}
    if record.fidelity is not None:
        figures["training_seconds_given"] = record.fidelity
    if record.contended:
        figures["contended"] = True  # it ran on a busy machine: not judged on this run
    return figures


def _tried(run: RunDir, record: JournalRecord, change: str | None) -> dict[str, Any]:
    # "key" identifies the edit for the loop (never proposed twice); "change" is what the Analyst reads
    # first, with the instruction that asked for it one level down.
    return {"key": record.decision_key, "change": change, "status": record.status,
            "val_accuracy": record.val_accuracy, **_compute(run, record),
            "detail": {"target": record.target, "instruction": _short(record.instruction)}}


def build_history(run: RunDir, dataset: dict[str, Any], budget: dict[str, Any]) -> History:
    records = run.iterations()
    by_iter = {r.iteration: r for r in records}
    best = run.best_record()
    changes: dict[int, str | None] = {}

    def change(r: JournalRecord) -> str | None:
        # A record can be both recent and tried: its two modules are read and parsed once.
        if r.iteration not in changes:
            changes[r.iteration] = change_of(run, r)
        return changes[r.iteration]

    best_view = None
    if best is not None:
        d = run.iter_dir(best.iteration)
        metrics = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").exists() else {}
        summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
        curves = metrics.get("curves", {})
        best_view = {
            "iteration": best.iteration,
            "val_accuracy": best.val_accuracy,
            "train_accuracy": best.train_accuracy,
            # The harness's count of optimiser steps; the step of the last logged loss only when it has none
            # (that can be a few steps short of the true count, which confused readers of both).
            "train_steps": compute_figures(metrics).get("steps")
            or (int(curves["train/loss"][-1][0]) if curves.get("train/loss") else None),
            "interrupted": metrics.get("interrupted", False),
            # Epochs and images/s: whether the budget bought enough passes, and whether a
            # worse child simply got less compute on a busy machine (steal, CPU use).
            "compute": compute_figures(metrics),
            "summary": summary,
            "curves": {
                tag: downsample(pts) for tag, pts in curves.items() if tag in ("train/loss", "train/accuracy", "lr")
            },
        }

    recent = []
    for r in records[-RECENT:]:
        parent = by_iter.get(r.parent) if r.parent is not None else None
        delta = None
        if parent and r.val_accuracy is not None and parent.val_accuracy is not None:
            delta = round(r.val_accuracy - parent.val_accuracy, 4)
        recent.append(
            {
                "iteration": r.iteration,
                "parent": r.parent,
                "kind": r.kind,
                "change": change(r),
                "target": r.target,
                "instruction": _short(r.instruction),
                "status": r.status,
                "accepted": r.accepted,
                "val_accuracy": r.val_accuracy,
                "delta_vs_parent": delta,
                "train_accuracy": r.train_accuracy,
                **_compute(run, r),
                "error": _short((r.error or {}).get("message")),
            }
        )

    failures: dict[str, dict[str, Any]] = {}
    for r in records:
        if not r.ok:
            cause = failure_cause(r)
            f = failures.setdefault(cause, {"cause": cause, "count": 0, "iterations": [], "last_message": None})
            f["count"] += 1
            f["iterations"] = (f["iterations"] + [r.iteration])[-3:]
            f["last_message"] = _short((r.error or {}).get("message"))

    # Edits already tried on the pipeline the next edit will start from: the
    # best one, or while nothing has succeeded yet, the last attempt.
    parent = best.iteration if best is not None else (records[-1].iteration if records else None)
    if best is not None:
        # A run contended twice was not judged (automodel.search.contention): it may be proposed again.
        # Promotions and refits rerun a pipeline unchanged: no edit was tried.
        tried = [_tried(run, r, change(r)) for r in records
                 if r.parent == parent and not r.contended and r.kind not in ("promotion", "refit")]
    else:
        # Nothing has trained yet: each edit builds on the last failure, so every
        # edit made so far counts as tried (a rescue move is never sent twice).
        tried = [_tried(run, r, change(r)) for r in records if r.decision_key]
    # Edits rejected on the earlier best pipelines this one grew from. The best
    # differs from them by a few accepted edits only, so an edit that did not
    # help there rarely helps here: worth retrying only when nothing fresher is left.
    ancestors = set(lineage(by_iter, parent)[1:]) if best is not None else set()
    rejected_earlier = [_tried(run, r, change(r)) for r in records
                        if r.parent in ancestors and not r.accepted and r.decision_key]
    return History(
        dataset=dataset,
        budget=budget,
        best=best_view,
        recent=recent,
        failures=list(failures.values())[-10:],
        parent_iteration=parent,
        tried_on_best=tried[-TRIED_MAX:],
        rejected_on_earlier_best=rejected_earlier[-TRIED_MAX:],
        num_iterations=len(records),
        chance_accuracy=round(1.0 / max(1, int(dataset.get("num_classes", 2))), 4),
    )
