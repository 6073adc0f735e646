"""The agent loop: Architect -> run -> Analyst -> one Engineer -> keep if better.

`fit()` reads like the diagram in docs/architecture.md. The brain (who thinks)
and `execute` (who runs a pipeline in the sandbox) are passed in, so the same
loop drives the built-in expert, an LLM, and the tests.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from automodel.outputs import tb
from automodel.search.acceptance import is_improvement, paired_evidence, standard_error
from automodel.agents.base import ENGINEERS, MODULES, Brain, Brief, CallRecord, Decision, Pipeline
from automodel.errors import AutomodelError, HarnessError, LLMConfigError, LLMServiceError
from automodel.search.history import build_history, tail_mean
from automodel.search.progress import Progress
from automodel.search.workspace import RunDir, atomic_write_json

# Brain failures that would repeat on every iteration: stop the run (resume later).
FATAL = (LLMConfigError, LLMServiceError)


@dataclass(frozen=True)
class FitConfig:
    iters: int = 20                   # iterations in all, the Architect's first included
    time_per_iter: float = 60.0       # training seconds each iteration gets
    time_budget: float | None = None  # wall-clock seconds for the whole run (None: no limit)
    min_delta: float = 0.002          # validation accuracy an edit must add to be kept
    min_z: float = 0.0                # ...and its paired gain over the best, in standard errors (automodel.search.acceptance; 0 = off)
    max_repairs: int = 2              # repair attempts by the owning engineer per iteration
    seed: int = 0                     # seeds splits, training and the brain
    device: str = "cpu"               # "cpu" or "cuda"


class Execute(Protocol):
    def __call__(self, iter_dir: Path, time_limit: float) -> Any:
        """Run the pipeline in iter_dir in the sandbox and return its IterationResult."""


# Per-iteration seconds spent outside training (sandbox start, preflight,
# prediction); used only to decide whether another iteration fits the budget.
OVERHEAD_GUESS = 15.0
MIN_TRAIN_SECONDS = 5.0


def result_dict(result: Any) -> dict[str, Any]:
    return result if isinstance(result, dict) else dataclasses.asdict(result)


def error_text(res: dict[str, Any]) -> str:
    """What the owning engineer is shown when asked to repair."""
    err = res.get("error") or {}
    parts = [f"status: {res.get('status')}"]
    if err:
        parts.append(f"{err.get('type') or 'error'} in {err.get('module') or '?'}.py during {err.get('phase') or '?'}: {err.get('message') or ''}")
        if err.get("traceback"):
            parts.append("traceback (last lines):\n" + err["traceback"][-2500:])
    return "\n".join(parts)


def save_calls(calls: list[CallRecord], iter_dir: Path, stage: str) -> dict[str, Any]:
    """Write prompts and raw replies into iter_dir/llm/ and return token totals."""
    totals = {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "calls": 0}
    if not calls:
        return totals
    folder = iter_dir / "llm"
    folder.mkdir(exist_ok=True)
    start = len(list(folder.glob("*.prompt.md")))
    with open(folder / "calls.jsonl", "a", encoding="utf-8") as index:
        for i, call in enumerate(calls, start=start + 1):
            stem = f"{i:02d}_{stage}_{call.role}"
            (folder / f"{stem}.prompt.md").write_text(call.prompt, encoding="utf-8")
            (folder / f"{stem}.reply.md").write_text(call.reply, encoding="utf-8")
            meta = dataclasses.asdict(call)
            meta.pop("prompt"), meta.pop("reply")
            index.write(json.dumps({"file": stem, **meta}) + "\n")
            totals["prompt_tokens"] += call.prompt_tokens
            totals["completion_tokens"] += call.completion_tokens
            # One call without a known price makes the total unknown, not zero.
            totals["cost_usd"] = None if totals["cost_usd"] is None or call.cost_usd is None else totals["cost_usd"] + call.cost_usd
            totals["calls"] += 1
    return totals


def _add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {k: a.get(k, 0) + b.get(k, 0) for k in set(a) | set(b) if k != "cost_usd"}
    if not a.get("calls"):
        out["cost_usd"] = b.get("cost_usd", 0.0)
    elif not b.get("calls"):
        out["cost_usd"] = a.get("cost_usd", 0.0)
    else:
        out["cost_usd"] = None if a.get("cost_usd") is None or b.get("cost_usd") is None else a["cost_usd"] + b["cost_usd"]
    return out


class Loop:
    """One run's loop state; `fit()` is the whole algorithm."""

    def __init__(self, run: RunDir, brain: Brain, execute: Execute, cfg: FitConfig, brief: Brief,
                 dataset_facts: dict[str, Any], progress: Progress, val_labels: np.ndarray | None = None):
        self.run, self.brain, self.execute, self.cfg = run, brain, execute, cfg
        self.brief, self.facts, self.progress = brief, dataset_facts, progress
        self.val_labels = val_labels  # trusted side only: to compare two iterations image by image
        self.session_start = time.monotonic()
        self.previous_seconds = sum(r.get("seconds", 0) for r in run.iterations())

    # ---- the algorithm
    def fit(self) -> dict[str, Any]:
        try:
            return self._fit()
        except OSError as err:  # the workspace cannot be written, the disk is full, ...
            raise HarnessError(f"automodel could not write or read its own files ({err}). Free disk space or fix the "
                               f"permissions of {self.run.path}.") from err

    def _fit(self) -> dict[str, Any]:
        while self.run.next_iteration() <= self.cfg.iters:
            n = self.run.next_iteration()
            time_limit = self._time_for_next()
            if time_limit is None:
                self.progress.note(f"Time budget of {self.cfg.time_budget:.0f}s used up; stopping before iteration {n}.")
                break
            if n == 1:
                self._iteration(n, parent=None, decision=None, time_limit=time_limit)
                continue
            history = build_history(self.run, self.facts, self._budget())
            parent = history["parent_iteration"]
            if history["best"] is None and not (self.run.iter_dir(parent) / "data.py").exists():
                # Nothing ran yet that an engineer could edit (the brain failed to write
                # code): ask the Architect again.
                self._iteration(n, parent=None, decision=None, time_limit=time_limit)
                continue
            try:
                decision = self.brain.analyst(history)
            except FATAL:
                raise
            except AutomodelError as err:
                calls = self.brain.take_calls()
                if type(err).__name__ == "AnalystExhausted":
                    self.progress.note(str(err))
                    break
                self._record_brain_failure(n, parent, "analyst", err, calls)
                continue
            if decision.key() in {t.get("key") for t in history["tried_on_best"]}:
                self._record_brain_failure(n, parent, "analyst", AutomodelError(
                    f"the Analyst repeated a decision already tried on iteration {parent}: {decision.instruction}"),
                    self.brain.take_calls())
                continue
            self._iteration(n, parent=parent, decision=decision, time_limit=time_limit, analyst_calls=self.brain.take_calls())
        return self.outcome()

    def _iteration(self, n: int, parent: int | None, decision: Decision | None, time_limit: float,
                   analyst_calls: list[CallRecord] | None = None) -> None:
        started = time.monotonic()
        d = self.run.fresh_iter_dir(n)
        tokens = save_calls(analyst_calls or [], d, "analyst")
        target = decision.target if decision else None
        self.progress.start(n, self.cfg.iters, self._who(decision), decision.instruction if decision else "first complete pipeline",
                            decision.reason if decision else None)
        try:
            if decision is None:
                pipeline = self.brain.architect(self.brief)
            else:
                base = self.run.pipeline(parent)
                pipeline = base.with_module(target, self.brain.engineer(target, base, decision))
        except FATAL:
            raise
        except AutomodelError as err:
            tokens = _add(tokens, save_calls(self.brain.take_calls(), d, "architect" if decision is None else "engineer"))
            self._finish(n, parent, decision, d, started, {"status": "brain_error", "error": {"phase": "write", "module": target, "type": type(err).__name__, "message": str(err)}},
                         pipeline=None, repairs=0, tokens=tokens)
            return
        tokens = _add(tokens, save_calls(self.brain.take_calls(), d, "architect" if decision is None else "engineer"))

        repairs = 0
        while True:
            self._write_pipeline(d, pipeline)
            res = result_dict(self.execute(d, time_limit))
            if res.get("status") == "harness_error":
                # Not the pipeline's fault: no repair, no record, no Analyst; resume redoes this iteration.
                err = res.get("error") or {}
                raise HarnessError(f"Iteration {n} could not run because automodel's own side failed, not the pipeline: "
                                   f"{err.get('message')}\n{err.get('traceback') or ''}".rstrip())
            if res.get("status") == "ok" or repairs >= self.cfg.max_repairs:
                break
            owner = (res.get("error") or {}).get("module") or target or "train"
            if owner not in MODULES:
                owner = target or "train"
            self.progress.repair(n, ENGINEERS[owner], res)
            try:
                repaired = self.brain.engineer(owner, pipeline, decision, error=error_text(res))
            except FATAL:
                raise
            except AutomodelError as err:
                tokens = _add(tokens, save_calls(self.brain.take_calls(), d, "repair"))
                self.progress.note(f"        no repair: {err}")
                break  # the failed attempt's files stay in d with the final record
            tokens = _add(tokens, save_calls(self.brain.take_calls(), d, "repair"))
            # Keep the failed attempt (files and record) before rerunning the repaired pipeline.
            self.run.append(self._record(n, parent, decision, res, started, repairs, tokens, final=False,
                                         attempt_dir=self._stash_attempt(d, repairs + 1)))
            pipeline = pipeline.with_module(owner, repaired)
            repairs += 1
        self._finish(n, parent, decision, d, started, res, pipeline, repairs, tokens)

    def _finish(self, n, parent, decision, d: Path, started: float, res: dict[str, Any], pipeline: Pipeline | None,
                repairs: int, tokens: dict[str, Any]) -> None:
        curves = res.get("curves") or {}
        # How well the training set is fit: measured like validation when the harness did
        # (augmentation, MixUp and label smoothing make the logged curve understate it).
        train_acc = res.get("train_eval_accuracy")
        if train_acc is None:
            train_acc = tail_mean(curves.get("train/accuracy") or [])
        res = {**res, "train_accuracy": _round(train_acc)}
        if pipeline is not None:
            summary = self.brain.summarize(pipeline, res)
            tokens = _add(tokens, save_calls(self.brain.take_calls(), d, "summarizer"))
            atomic_write_json(d / "summary.json", summary)
        best = self.run.best_record()
        scored = res.get("status") == "ok" and res.get("val_accuracy") is not None
        evidence = None
        if scored and best is not None and self.val_labels is not None:
            evidence = paired_evidence(d / "probs_val.npy", self.run.iter_dir(best["iteration"]) / "probs_val.npy",
                                       self.val_labels)
        accepted = scored and (best is None or is_improvement(res["val_accuracy"], best["val_accuracy"],
                                                              self.cfg.min_delta, evidence, self.cfg.min_z))
        record = self._record(n, parent, decision, res, started, repairs, tokens, final=True, accepted=accepted)
        if evidence is not None:
            record["evidence"] = evidence.to_json()
        if accepted:
            self.run.promote(n)
        self.run.append(record)  # the commit point of the iteration
        tb.update_after_iteration(self.run.path, n)  # live curves; never raises
        self.progress.finish(record, self.run.best_record(), self._elapsed())

    # ---- helpers
    def _record(self, n, parent, decision, res, started, repairs, tokens, final, accepted=False, attempt_dir=None):
        err = res.get("error")
        rec = {
            "iteration": n, "final": final, "attempt": repairs + 1, "parent": parent,
            "target": decision.target if decision else "architect",
            "instruction": decision.instruction if decision else "write the first complete pipeline",
            "reason": decision.reason if decision else "start of the run",
            "decision_key": decision.key() if decision else None,
            "edit": decision.edit if decision else None,
            "status": res.get("status"), "accepted": accepted,
            "val_accuracy": _round(res.get("val_accuracy")), "test_accuracy": _round(res.get("test_accuracy")),
            "train_accuracy": res.get("train_accuracy"),
            "seconds": round(time.monotonic() - started, 2), "repairs": repairs,
            "error": {k: err.get(k) for k in ("phase", "module", "type", "message")} if err else None,
            "tokens": tokens.get("prompt_tokens", 0) + tokens.get("completion_tokens", 0),
            "cost_usd": round(tokens["cost_usd"], 6) if tokens.get("calls") and tokens.get("cost_usd") is not None else None,
            "brain": self.brain.name, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if attempt_dir:
            rec["attempt_dir"] = attempt_dir
        return rec

    def _record_brain_failure(self, n, parent, role, err, calls):
        d = self.run.fresh_iter_dir(n)
        tokens = save_calls(calls, d, role)
        decision = Decision(target="analyst", instruction="(no decision)", reason=str(err))
        started = time.monotonic()
        self.progress.start(n, self.cfg.iters, "Performance Analyst", "decide the next edit", None)
        res = {"status": "brain_error", "error": {"phase": role, "module": None, "type": type(err).__name__, "message": str(err)}}
        record = self._record(n, parent, decision, res, started, 0, tokens, final=True)
        record["target"] = None
        self.run.append(record)
        self.progress.finish(record, self.run.best_record(), self._elapsed())

    @staticmethod
    def _write_pipeline(d: Path, pipeline: Pipeline) -> None:
        for m in MODULES:
            (d / f"{m}.py").write_text(pipeline.module(m), encoding="utf-8")

    @staticmethod
    def _stash_attempt(d: Path, attempt: int) -> str:
        """Move a failed attempt's files into d/attempt_K so the repaired run starts clean."""
        keep = d / f"attempt_{attempt}"
        keep.mkdir()
        for item in list(d.iterdir()):
            if item.name.startswith("attempt_") or item.name == "llm":
                continue
            item.rename(keep / item.name)
        return keep.name

    def _elapsed(self) -> float:
        return self.previous_seconds + (time.monotonic() - self.session_start)

    def _time_for_next(self) -> float | None:
        if self.cfg.time_budget is None:
            return self.cfg.time_per_iter
        left = self.cfg.time_budget - self._elapsed() - OVERHEAD_GUESS
        if left < MIN_TRAIN_SECONDS:
            return None
        return min(self.cfg.time_per_iter, left)

    def _budget(self) -> dict[str, Any]:
        done = len(self.run.iterations())
        return {"iterations_done": done, "iterations_total": self.cfg.iters, "time_per_iter": self.cfg.time_per_iter,
                "elapsed_seconds": round(self._elapsed(), 1), "time_budget": self.cfg.time_budget}

    @staticmethod
    def _who(decision: Decision | None) -> str:
        return "Project Architect" if decision is None else ENGINEERS.get(decision.target, decision.target)

    def outcome(self) -> dict[str, Any]:
        return summarize_run(self.run)


def summarize_run(run: RunDir) -> dict[str, Any]:
    """The figures `show --json` and the end-of-run message are made of."""
    records = run.iterations()
    best = run.best_record()
    failed = [r for r in records if r.get("status") != "ok"]
    tokens = sum(r.get("tokens") or 0 for r in records)
    costs = [r["cost_usd"] for r in records if r.get("cost_usd") is not None]
    val_images = len((run.info.get("split") or {}).get("val") or [])  # the split's val indices
    return {
        "iterations": [{k: r.get(k) for k in ("iteration", "status", "target", "instruction", "accepted", "val_accuracy",
                                               "test_accuracy", "seconds", "repairs", "tokens", "cost_usd", "evidence")} for r in records],
        "best": {k: best.get(k) for k in ("iteration", "val_accuracy", "test_accuracy")} if best else None,
        "val_images": val_images or None,
        "val_std_error": standard_error(best.get("val_accuracy"), val_images) if best else None,
        "failed_share": round(len(failed) / len(records), 3) if records else None,
        "tokens": tokens,
        "cost_usd": round(sum(costs), 6) if costs else None,
    }


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)
