"""The agent loop: Architect -> run -> Analyst -> one Engineer -> keep if better.

`fit()` reads like the diagram in docs/architecture.md. The brain (who thinks)
and `execute` (who runs a pipeline in the sandbox) are passed in, so the same
loop drives the built-in expert, an LLM, and the tests (a scripted brain and
a fake executor: tests/test_loop_fast.py).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from automodel.agents.base import Brain, BrainExhausted
from automodel.core import (
    ENGINEERS,
    MODULES,
    Brief,
    CallRecord,
    Decision,
    ErrorInfo,
    IterationResult,
    JournalRecord,
    Pipeline,
    SandboxInfo,
    Usage,
)
from automodel.errors import AutomodelError, HarnessError, LLMConfigError, LLMServiceError
from automodel.files import atomic_write_json
from automodel.search.acceptance import is_improvement, paired_evidence, standard_error
from automodel.search.brain_clock import TimedBrain
from automodel.search.calls import save_calls
from automodel.search.contention import contention
from automodel.search.history import build_history, tail_mean
from automodel.search.plan import MIN_TRAIN_SECONDS, OVERHEAD_GUESS, Placement
from automodel.search.pool import (
    PRODUCED,
    Cancelled,
    CommitOrder,
    Job,
    Produced,
    SlotPool,
    WorkerSlot,
    read_produced,
    run_jobs,
)
from automodel.search.progress import Progress
from automodel.search.workspace import RunDir, read_final

# Brain failures that would repeat on every iteration: stop the run (resume later).
FATAL = (LLMConfigError, LLMServiceError)


@dataclass(frozen=True)
class FitConfig:
    iters: int = 20                   # iterations in all, the Architect's first included
    time_per_iter: float = 60.0       # training seconds each iteration gets
    time_budget: float | None = None  # wall-clock seconds for the whole run (None: no limit)
    min_delta: float = 0.002          # validation accuracy an edit must add to be kept
    min_z: float = 0.0                # ...and its paired gain over the best, in standard errors (0 = off)
    max_repairs: int = 2              # repair attempts by the owning engineer per iteration
    seed: int = 0                     # seeds splits, training and the brain
    device: str = "cpu"               # "cpu" or "cuda"
    search: str = "budget"            # "budget" (rounds, rungs, final refit) or "greedy" (the published loop)
    final_share: float = 0.6          # budget search: share of the budget reserved for the final refit
    candidates: int | None = None     # budget search: candidates per round (None: the plan's default)
    parallel: int = 1                 # budget search: candidates that run at once, each in a 1/K slot
    executor: str = "local"           # where runs go: "local" (sandboxed children here) or "ray" (Ray tasks)
    ray_address: str | None = None    # --executor ray: the cluster to join (None: start a local instance)


class Execute(Protocol):
    def __call__(self, iter_dir: Path, time_limit: float, refit: bool = False,
                 slot: WorkerSlot | None = None) -> IterationResult:
        """Run the pipeline in iter_dir in the sandbox and return its IterationResult; `refit` trains it
        on train+val (validation is then not a held-out score); `slot` is its share of the machine (None:
        all of it). Called with `slot` only by a round run at once."""




def brain_error(phase: str, module: str | None, err: Exception) -> IterationResult:
    """The result of an iteration whose brain could not write (or decide) anything."""
    return IterationResult(
        status="brain_error",
        val_accuracy=None,
        test_accuracy=None,
        curves={},
        timings={},
        error=ErrorInfo(phase, module, type(err).__name__, str(err)),
        sandbox=SandboxInfo("none", ()),
    )


def error_text(res: IterationResult) -> str:
    """What the owning engineer is shown when asked to repair."""
    parts = [f"status: {res.status}"]
    err = res.error
    if err:
        parts.append(f"{err.type or 'error'} in {err.module or '?'}.py during {err.phase or '?'}: {err.message or ''}")
        if err.traceback:
            parts.append("traceback (last lines):\n" + err.traceback[-2500:])
    return "\n".join(parts)


class Loop:
    """One run's loop state; `fit()` is the whole algorithm."""

    def __init__(
        self,
        run: RunDir,
        brain: Brain,
        execute: Execute,
        cfg: FitConfig,
        brief: Brief,
        dataset_facts: dict[str, Any],
        progress: Progress,
        val_labels: np.ndarray | None = None,
        on_iteration: Callable[[int], None] | None = None,
        test_labels: np.ndarray | None = None,
        started: float | None = None,
        slots: list[WorkerSlot] | None = None,
    ):
        self.run, self.execute, self.cfg = run, execute, cfg
        self.brain = TimedBrain(brain)  # its seconds are not charged to a budget given as iterations (_spent)
        self.brief, self.facts, self.progress = brief, dataset_facts, progress
        self.val_labels = val_labels  # trusted side only: to compare two iterations image by image
        self.test_labels = test_labels  # trusted side only: to score an ensemble's averaged test predictions
        self.on_iteration = on_iteration or (lambda n: None)  # e.g. TensorBoard's live curves; must never raise
        # The time budget counts from `started` (time.monotonic()): the session's setup (decoding, the sandbox
        # probe, the throughput probe) is wall time the user waits for too.
        self.session_start = time.monotonic() if started is None else started
        self.previous_seconds = sum(r.seconds for r in run.iterations())
        self.search_facts: dict[str, Any] = {}  # what the budget search adds to the Analyst's budget
        # --parallel: the slots a round's candidates run in; `order` is set while a round runs at once.
        self.pool = SlotPool(slots) if slots and len(slots) > 1 else None
        self.order: CommitOrder | None = None
        self._brain_lock = threading.RLock()  # one brain call at a time; its calls are taken by the caller

    # ---- the algorithm
    def fit(self) -> dict[str, Any]:
        try:
            return self._fit()
        except OSError as err:  # the workspace cannot be written, the disk is full, ...
            raise HarnessError(
                f"automodel could not write or read its own files ({err}). Free disk space or fix the "
                f"permissions of {self.run.path}."
            ) from err

    def _fit(self) -> dict[str, Any]:
        if self.cfg.search == "budget":
            from automodel.search.budget import BudgetSearch  # it drives this loop's iterations

            BudgetSearch(self).search()
            return self.outcome()
        return self._fit_greedy()

    def _fit_greedy(self) -> dict[str, Any]:
        """The published protocol: one edit per iteration at full length, kept if better."""
        while self.run.next_iteration() <= self.cfg.iters:
            n = self.run.next_iteration()
            time_limit = self._time_for_next()
            if time_limit is None:
                self.progress.note(
                    f"Time budget of {self.cfg.time_budget:.0f}s used up; stopping before iteration {n}."
                )
                break
            if n == 1:
                self._iteration(n, parent=None, decision=None, time_limit=time_limit)
                continue
            history = build_history(self.run, self.facts, self._budget())
            parent = history.parent_iteration
            if history.best is None and not (self.run.iter_dir(parent) / "data.py").exists():
                # Nothing ran yet that an engineer could edit (the brain failed to write
                # code): ask the Architect again.
                self._iteration(n, parent=None, decision=None, time_limit=time_limit)
                continue
            try:
                decision = self.brain.analyst(history)
            except FATAL:
                raise
            except BrainExhausted as err:
                self.brain.take_calls()
                self.progress.note(str(err))
                break
            except AutomodelError as err:
                self._record_brain_failure(n, parent, err, self.brain.take_calls())
                continue
            if decision.key() in history.tried_keys():
                self._record_brain_failure(
                    n,
                    parent,
                    AutomodelError(
                        f"the Analyst repeated a decision already tried on iteration {parent}: {decision.instruction}"
                    ),
                    self.brain.take_calls(),
                )
                continue
            self._iteration(
                n, parent=parent, decision=decision, time_limit=time_limit, analyst_calls=self.brain.take_calls()
            )
        return self.outcome()

    def _iteration(
        self,
        n: int,
        parent: int | None,
        decision: Decision | None,
        time_limit: float,
        analyst_calls: list[CallRecord] | None = None,
        place: Placement | None = None,
        given: Pipeline | None = None,
    ) -> None:
        """One iteration: write the pipeline (the Architect's, an engineer's edit of the parent, or `given`
        as it is), run it, repair it when it fails, and record it. Several may run at once in a round
        (search/pool.py): the brain is asked by one of them at a time, and records commit in order."""
        started = time.monotonic()
        d = self.run.fresh_iter_dir(n)
        usage = save_calls(analyst_calls or [], d, "analyst")
        target = decision.target if decision else None
        stage = "architect" if decision is None else "engineer"
        self.progress.start(
            n,
            self.cfg.iters,
            self._who(decision),
            decision.instruction if decision else "first complete pipeline",
            decision.reason if decision else None,
        )
        with self._brain_lock:
            try:
                if given is not None:
                    pipeline = given
                elif decision is None:
                    pipeline = self.brain.architect(self.brief)
                else:
                    base = self.run.pipeline(parent)
                    pipeline = base.with_module(target, self.brain.engineer(target, base, decision))
            except FATAL:
                raise
            except AutomodelError as err:
                usage += save_calls(self.brain.take_calls(), d, stage)
                self._finish(n, parent, decision, d, started, brain_error("write", target, err), None, 0, usage,
                             place)
                return
            usage += save_calls(self.brain.take_calls(), d, stage)

        repairs, contended_before, attempts = 0, False, []
        refit = place is not None and place.kind == "refit"  # a one-shot run (plan.one_shot): on train+val
        while True:
            self._write_pipeline(d, pipeline)
            with self._slot(n) as slot:
                res = self.execute(d, time_limit, **({"refit": True} if refit else {}),
                                   **({"slot": slot} if slot is not None else {}))
            if res.status == "harness_error":
                # Not the pipeline's fault: no repair, no record, no Analyst; resume redoes this iteration.
                err = res.error or ErrorInfo("sandbox", None, "HarnessError", "unknown")
                raise HarnessError(
                    f"Iteration {n} could not run because automodel's own side failed, not the pipeline: "
                    f"{err.message}\n{err.traceback}".rstrip()
                )
            if res.ok and place is not None and (why := self._contended(d, parent)):
                if contended_before:
                    break  # run twice on a busy machine: recorded as contended, neither kept nor rejected
                self.progress.note(f"        #{n} contended ({why}): running it again")
                attempts.append(replace(self._record(n, parent, decision, res, started, repairs, usage, final=False),
                                        attempt_dir=self._stash_attempt(d, f"contended_{repairs + 1}"),
                                        contended=True))
                contended_before = True
                continue
            if res.ok or res.status == "lost" or repairs >= self.cfg.max_repairs:
                break  # a lost worker is no fault of the code: nothing to repair
            owner = (res.error.module if res.error else None) or target or "train"
            if owner not in MODULES:
                owner = target if target in MODULES else "train"
            self.progress.repair(n, ENGINEERS[owner], res)
            with self._brain_lock:
                try:
                    repaired = self.brain.engineer(owner, pipeline, decision, error=error_text(res))
                except FATAL:
                    raise
                except AutomodelError as err:
                    usage += save_calls(self.brain.take_calls(), d, "repair")
                    self.progress.note(f"        no repair: {err}")
                    break  # the failed attempt's files stay in d with the final record
                usage += save_calls(self.brain.take_calls(), d, "repair")
            # Keep the failed attempt (files and record) before rerunning the repaired pipeline.
            attempts.append(
                replace(
                    self._record(n, parent, decision, res, started, repairs, usage, final=False),
                    attempt_dir=self._stash_attempt(d, repairs + 1),
                )
            )
            pipeline = pipeline.with_module(owner, repaired)
            repairs += 1
        if refit and res.val_accuracy is not None:
            # Trained on the validation images: their score is not a held-out one, so it is not kept.
            res = replace(res, val_accuracy=None)
            atomic_write_json(d / "metrics.json", res.to_json())
        where = replace(slot, node=res.config.get("node") or slot.node).label() if slot is not None else None
        self._finish(n, parent, decision, d, started, res, pipeline, repairs, usage, place, attempts, where)

    def run_at_once(self, jobs: list[Job], calls: dict[int, list[CallRecord]] | None = None) -> None:
        """Run reserved jobs K at a time, each in a slot of the pool, committing in iteration order
        (search/pool.py). A job that produced its outcome before a stop is committed, not run again."""
        assert self.pool is not None
        calls = calls or {}
        self.order = CommitOrder(self.run.next_iteration)
        try:
            # A thread per job: one that waits for its turn to commit holds no slot, so the next job can run.
            run_jobs([partial(self._job, job, calls.get(job.iteration)) for job in jobs], len(jobs), self.order,
                     on_cancel=getattr(self.execute, "cancel", None))
        finally:
            self.order = None

    def _job(self, job: Job, calls: list[CallRecord] | None) -> None:
        produced = read_produced(self.run.iter_dir(job.iteration))
        if produced is not None and self.order is not None:
            self.progress.note(f"        #{job.iteration} had finished before the stop: its record is kept")
            self.order.wait_turn(job.iteration)
            self._commit(produced)
            return
        given = self.run.pipeline(job.given_from) if job.given_from is not None else None
        self._iteration(job.iteration, job.parent, job.decision, job.time_limit, analyst_calls=calls,
                        place=job.place, given=given)

    @contextmanager
    def _slot(self, n: int) -> Iterator[WorkerSlot | None]:
        """The slot iteration n runs in: one of the pool's in a round run at once, else none (the whole
        machine)."""
        if self.order is None or self.pool is None:
            yield None
            return
        with self.pool.slot() as slot:
            if self.order.cancelled:  # the round was cancelled while this run waited for a slot
                raise Cancelled()
            self.progress.running(n, slot.label())
            try:
                yield slot
            finally:
                self.progress.running(n, None)

    def _contended(self, d: Path, parent: int | None) -> str | None:
        """Why the run in d got an unfair share of the machine, compared with its parent (None: it did not)."""
        from automodel.files import read_json
        from automodel.search.workspace import compute_figures

        try:
            compute = compute_figures(read_json(d / "metrics.json"))
        except (OSError, ValueError):
            return None
        return contention(compute, self.run.compute(parent) if parent is not None else None)

    def _finish(
        self,
        n: int,
        parent: int | None,
        decision: Decision | None,
        d: Path,
        started: float,
        res: IterationResult,
        pipeline: Pipeline | None,
        repairs: int,
        usage: Usage,
        place: Placement | None = None,
        attempts: list[JournalRecord] | None = None,
        slot: str | None = None,
    ) -> None:
        if pipeline is not None:
            with self._brain_lock:
                summary = self.brain.summarize(pipeline, {**res.to_json(), "train_accuracy": _train_accuracy(res)})
                usage += save_calls(self.brain.take_calls(), d, "summarizer")
            atomic_write_json(d / "summary.json", summary)
        job = Job(n, parent, decision, place.fidelity if place else 0.0, place)
        produced = Produced(job, res, repairs, usage, round(time.monotonic() - started, 2), slot, attempts or [])
        if self.order is not None:
            # In a round run at once: keep what was produced (resume commits it without running it again),
            # then wait until every earlier iteration is in the journal.
            atomic_write_json(d / PRODUCED, produced.to_json())
            self.order.wait_turn(n)
        self._commit(produced)

    def _commit(self, produced: Produced) -> None:
        """Judge a produced run against the best of its rung now and append its records (the commit point)."""
        job, res = produced.job, produced.result
        n, parent, decision, place = job.iteration, job.parent, job.decision, job.place
        d = self.run.iter_dir(n)
        best = self.run.best_record() if place is None else self.rung_best(place.rung)
        scored = res.ok and res.val_accuracy is not None
        contended = place is not None and scored and self._contended(d, parent) is not None
        evidence = None
        if scored and best is not None and self.val_labels is not None:
            evidence = paired_evidence(
                d / "probs_val.npy", self.run.iter_dir(best.iteration) / "probs_val.npy", self.val_labels
            )
        # A one-shot run (plan.one_shot) is the run's only model: kept, though its validation images were trained on.
        one_shot = place is not None and place.kind == "refit" and res.ok
        accepted = one_shot or scored and not contended and (
            best is None
            or is_improvement(res.val_accuracy, best.val_accuracy, self.cfg.min_delta, evidence, self.cfg.min_z)
        )
        record = self._record(n, parent, decision, res, 0.0, produced.repairs, produced.usage, final=True,
                              accepted=accepted, seconds=produced.seconds)
        if evidence is not None:
            record = replace(record, evidence=evidence.to_json())
        if place is not None:
            record = replace(record, kind=place.kind, round=place.round, rung=place.rung, fidelity=place.fidelity,
                             contended=contended or None, slot=produced.slot)
        if accepted:
            self.run.promote(n)
        for attempt in produced.attempts:
            self.run.append(attempt)
        self.run.append(record)  # the commit point of the iteration
        (d / PRODUCED).unlink(missing_ok=True)
        if self.order is not None:
            self.order.committed()
        self.on_iteration(n)
        self.progress.finish(record, self.run.best_record(), self._elapsed())

    def rung_best(self, rung: int | None) -> JournalRecord | None:
        """The budget search's best at one fidelity: the last run of that rung kept against its rival."""
        kept = [r for r in self.run.iterations() if r.accepted and r.rung == rung]
        return kept[-1] if kept else None

    # ---- helpers
    def _record(
        self,
        n: int,
        parent: int | None,
        decision: Decision | None,
        res: IterationResult,
        started: float,
        repairs: int,
        usage: Usage,
        final: bool,
        accepted: bool = False,
        seconds: float | None = None,
    ) -> JournalRecord:
        err = res.error
        return JournalRecord(
            iteration=n,
            final=final,
            attempt=repairs + 1,
            parent=parent,
            target=decision.target if decision else "architect",
            instruction=decision.instruction if decision else "write the first complete pipeline",
            reason=decision.reason if decision else "start of the run",
            decision_key=decision.key() if decision else None,
            edit=decision.edit if decision else None,
            status=res.status,
            accepted=accepted,
            val_accuracy=_round(res.val_accuracy),
            test_accuracy=_round(res.test_accuracy),
            train_accuracy=_train_accuracy(res),
            seconds=round(time.monotonic() - started, 2) if seconds is None else seconds,
            repairs=repairs,
            error={"phase": err.phase, "module": err.module, "type": err.type, "message": err.message} if err else None,
            tokens=usage.tokens,
            cost_usd=usage.cost_or_none(),
            brain=self.brain.name,
            time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )

    def _record_brain_failure(self, n: int, parent: int | None, err: Exception, calls: list[CallRecord]) -> None:
        d = self.run.fresh_iter_dir(n)
        usage = save_calls(calls, d, "analyst")
        started = time.monotonic()
        self.progress.start(n, self.cfg.iters, "Performance Analyst", "decide the next edit", None)
        decision = Decision(target="analyst", instruction="(no decision)", reason=str(err))
        record = replace(
            self._record(n, parent, decision, brain_error("analyst", None, err), started, 0, usage, final=True),
            target=None,
        )
        self.run.append(record)
        self.progress.finish(record, self.run.best_record(), self._elapsed())

    @staticmethod
    def _write_pipeline(d: Path, pipeline: Pipeline) -> None:
        for m in MODULES:
            (d / f"{m}.py").write_text(pipeline.module(m), encoding="utf-8")

    @staticmethod
    def _stash_attempt(d: Path, attempt: int | str) -> str:
        """Move a failed (or contended) attempt's files into d/attempt_K so the rerun starts clean."""
        keep = d / f"attempt_{attempt}"
        keep.mkdir()
        for item in list(d.iterdir()):
            if item.name.startswith("attempt_") or item.name == "llm":
                continue
            item.rename(keep / item.name)
        return keep.name

    def _elapsed(self) -> float:
        return self.previous_seconds + (time.monotonic() - self.session_start)

    def _spent(self) -> float:
        """The budget used so far: wall time with --time-budget; with a budget from --iters x --time-per-iter,
        wall time less this session's waiting for the brain (an earlier session's waits stay counted). Such a
        budget is one of compute: with --parallel K, a run in a slot is charged 1/K of its time, as it had
        1/K of the machine (the brain's time is in the records there, and so charged)."""
        if self.cfg.time_budget is not None:
            return self._elapsed()
        if self.pool is not None:
            return sum(r.seconds * (self.slot_share if r.slot else 1.0) for r in self.run.iterations())
        return self._elapsed() - self.brain.seconds

    @property
    def slot_share(self) -> float:
        """The share of the machine one run at once gets (1: runs one at a time)."""
        return 1.0 / len(self.pool.slots) if self.pool is not None else 1.0

    def _time_for_next(self) -> float | None:
        if self.cfg.time_budget is None:
            return self.cfg.time_per_iter
        left = self.cfg.time_budget - self._elapsed() - OVERHEAD_GUESS
        if left < MIN_TRAIN_SECONDS:
            return None
        return min(self.cfg.time_per_iter, left)

    def _budget(self) -> dict[str, Any]:
        done = len(self.run.iterations())
        return {
            "iterations_done": done,
            "iterations_total": self.cfg.iters,
            # The budget search gives its own run lengths (candidate_seconds, final_refit_seconds); --time-per-iter
            # beside them only caps them, and read as a run length it contradicted them (said the LLM).
            **({} if self.search_facts else {"time_per_iter": self.cfg.time_per_iter}),
            "elapsed_seconds": round(self._elapsed(), 1),
            "time_budget": self.cfg.time_budget,
            **self.search_facts,
        }

    @staticmethod
    def _who(decision: Decision | None) -> str:
        return "Project Architect" if decision is None else ENGINEERS.get(decision.target, decision.target)

    def outcome(self) -> dict[str, Any]:
        return summarize_run(self.run)


def _train_accuracy(res: IterationResult) -> float | None:
    """How well the training set is fit: measured like validation when the harness did
    (augmentation, MixUp and label smoothing make the logged curve understate it)."""
    value = res.train_eval_accuracy
    if value is None:
        value = tail_mean(res.curves.get("train/accuracy") or [])
    return _round(value)


def run_usage(records: list[JournalRecord]) -> tuple[int, float | None]:
    """(tokens, cost in USD) of a run: the cost is None when any call's price is unknown."""
    tokens = sum(r.tokens for r in records)
    total = Usage()
    for r in records:
        total += r.usage
    return tokens, total.cost_or_none()


def summarize_run(run: RunDir) -> dict[str, Any]:
    """The figures `show --json` and the end-of-run message are made of."""
    records = run.iterations()
    best = run.best_record()
    failed = [r for r in records if not r.ok]
    tokens, cost = run_usage(records)  # final records carry their iteration's whole usage
    val_images = len((run.info.get("split") or {}).get("val") or [])  # the split's val indices
    keys = (
        "iteration",
        "status",
        "target",
        "instruction",
        "accepted",
        "val_accuracy",
        "test_accuracy",
        "seconds",
        "repairs",
        "tokens",
        "cost_usd",
        "evidence",
    )
    return {
        "iterations": [{**{k: getattr(r, k) for k in keys}, **placement(r), "compute": run.compute(r.iteration)}
                       for r in records],
        "best": {"iteration": best.iteration, "val_accuracy": best.val_accuracy, "test_accuracy": best.test_accuracy}
        if best
        else None,
        "val_images": val_images or None,
        "val_std_error": standard_error(best.val_accuracy, val_images) if best and best.val_accuracy is not None
        else None,
        "final": final_view(run.path),
        "failed_share": round(len(failed) / len(records), 3) if records else None,
        "tokens": tokens,
        "cost_usd": cost,
    }


def placement(record: JournalRecord) -> dict[str, Any]:
    """Where a budget-search attempt sits in the tree (parent, kind, round, rung, fidelity); {} for greedy."""
    if record.kind is None:
        return {}
    return {"parent": record.parent, "kind": record.kind, "round": record.round, "rung": record.rung,
            "fidelity": record.fidelity, "contended": bool(record.contended), "slot": record.slot}


def final_view(run_path: Path) -> dict[str, Any] | None:
    """The run's result when the budget search made a final model (show --json "final")."""
    spec = read_final(run_path)
    if spec is None:
        return None
    return {"kind": spec["kind"], "val_accuracy": spec.get("val_accuracy"), "test_accuracy": spec.get("test_accuracy"),
            "members": [m["iteration"] for m in spec["members"]],
            "refits": [m["refit"] for m in spec["members"] if m.get("refit") is not None],
            "weights": [m.get("weight", 1) for m in spec["members"]], "seconds": spec.get("seconds"),
            "training_seconds": spec.get("training_seconds"), "reason": spec.get("reason")}


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)
