"""The budget search: rounds of candidates at a low fidelity, promotion, then a final refit.

    plan (search/plan.py) -> rung 0: the Architect's pipeline, then rounds of K
    candidates from the brain, each compared with the best at rung 0 only
    -> rung 1 (large budgets): the best few trained ETA times longer, compared
    with each other -> final (search/final.py): the best (or a greedy ensemble
    of the best, when it wins by more than noise) retrained on train+val with
    the reserved time, scored once on test.

Every step is decided from the journal, so `resume` after a kill at any
moment continues where the run stood and loses only the running candidates.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Iterator

from automodel.agents.base import BrainExhausted
from automodel.core import Decision, JournalRecord
from automodel.errors import AutomodelError
from automodel.search.final import FinalPhase, one_shot_run
from automodel.search.history import build_history
from automodel.search.plan import MIN_TRAIN_SECONDS, OVERHEAD_GUESS, Placement, SearchPlan, config_plan
from automodel.search.pool import Job
from automodel.search.workspace import PENDING_KEY

if TYPE_CHECKING:
    from automodel.search.loop import Loop

PLAN_KEY = "search_plan"  # in run.json
NO_ANSWER = object()      # the brain gave no usable answer (BudgetSearch._ask)


def plan_for(loop: "Loop") -> tuple[SearchPlan, bool]:
    """The run's plan, and whether it changed: made once and kept in run.json, so a resumed run follows
    the same plan (made again when the budget options changed, e.g. `resume --iters`)."""
    cfg = loop.cfg
    plan = config_plan(cfg, has_test=loop.test_labels is not None and len(loop.test_labels) > 0)
    saved = loop.run.info.get(PLAN_KEY)
    if saved != plan.to_json():
        loop.run.update_info(**{PLAN_KEY: plan.to_json()})
        loop.progress.note("automodel: search plan: " + "; ".join(plan.reasons))
    # Only the numbers count: a newer automodel that words its reasons differently or plans something more
    # (a field an older run.json lacks) does not reopen a finished run.
    changed = saved is not None and any(saved.get(key, value) != value for key, value in plan.to_json().items()
                                        if key != "reasons")
    return plan, changed


class BudgetSearch:
    def __init__(self, loop: "Loop"):
        self.loop, self.run = loop, loop.run
        self.plan, replanned = plan_for(loop)
        self.final = FinalPhase(loop, self.plan)
        self._brain_done = False  # the brain said it has nothing left to propose (BrainExhausted)
        if replanned and self.final.done():
            # `resume --iters N` on a finished run: search on, then make the final model again.
            self.final.reopen()
            loop.progress.note("automodel: the budget grew: exploring further, then making the final model again")
        loop.search_facts = {"search": "budget", "candidate_seconds": self.plan.rungs[0],
                             "final_refit_seconds": self.plan.final}

    def search(self) -> None:
        if self.final.done():
            self.loop.progress.note(f"automodel: the final model of {self.run.path} is already made; start a new "
                                    "run with `automodel fit` to search again.")
            return
        if self.plan.one_shot:
            if not self.run.iterations():
                t = self.plan.rungs[0]
                self._run([Job(1, None, None, t, Placement("refit", None, t))])
            self.final.make_one_shot()
            return
        if not self.final.started():  # once the final phase began, its time is spent on it alone
            self._finish_pending()
            self._explore()
            if self.plan.promote:
                self._promote()
        self.final.make()

    # ---- rung 0
    def _explore(self) -> None:
        t0 = self.plan.rungs[0]
        place = Placement("candidate", 0, t0, 0)
        records = self.run.iterations()
        if all(r.kind == "refit" for r in records):
            # The first pipeline always runs (the feasibility check refused budgets too short for it),
            # shortened when the budget is tight. After a one-shot run (`resume --iters N` of an --iters 1
            # run) it is that run's pipeline, run again with the validation images held out.
            one_shot = one_shot_run(records)
            left = self.plan.explore_until - self.loop._spent() - OVERHEAD_GUESS
            self._run([Job(self.run.next_iteration(), None, None, max(MIN_TRAIN_SECONDS, min(t0, left)), place,
                           given_from=one_shot.iteration if one_shot else None)])
        while self._fits(t0, self.plan.rung0_until):
            best = self.loop.rung_best(0)
            n = self.run.next_iteration()
            if best is None and not self._editable():
                self._run([Job(n, None, None, t0, place)])
                continue
            if self.plan.stop_when_stale and (stale := stale_round(self.run.iterations())) is not None:
                self.loop.progress.note(f"automodel: round {stale} kept none of its candidates: exploration ends "
                                        "here and the final refit gets the time left")
                return
            if not self._round(t0):
                return

    # ---- running reserved jobs
    def _run(self, jobs: list[Job], calls: dict[int, list] | None = None) -> None:
        """Run jobs whose iteration numbers are reserved: one after another, or K at once with --parallel
        (each in its slot; run.json keeps them until the last commits, so `resume` finishes them)."""
        calls = calls or {}
        if self.loop.pool is None:
            for job in jobs:
                given = self.run.pipeline(job.given_from) if job.given_from is not None else None
                self.loop._iteration(job.iteration, job.parent, job.decision, job.time_limit,
                                     analyst_calls=calls.get(job.iteration), place=job.place, given=given)
            return
        self.run.update_info(**{PENDING_KEY: [job.to_json() for job in jobs]})
        self.loop.run_at_once(jobs, calls)
        self.run.drop_info(PENDING_KEY)

    def _finish_pending(self) -> None:
        """After a stop in the middle of a round run at once: commit what its candidates produced and run the
        ones that had not finished, with the decisions reserved for them."""
        saved = self.run.info.get(PENDING_KEY)
        if not saved:
            return
        done = self.run.next_iteration()
        jobs = [job for job in map(Job.from_json, saved) if job.iteration >= done]
        if jobs and self.loop.pool is not None:
            self.loop.progress.note(f"automodel: finishing the round that was stopped: iterations "
                                    f"{', '.join(str(j.iteration) for j in jobs)}")
            self._run(jobs)
        else:
            self.run.drop_info(PENDING_KEY)

    def _round(self, t0: float) -> bool:
        """Propose K distinct candidates off the current best and run them: each as soon as it is proposed,
        or, with --parallel, all of them K at a time once the round is proposed. False when the brain is
        done and the round is empty."""
        number = 1 + max((r.round or 0 for r in self.run.iterations()), default=0)
        place = Placement("candidate", 0, t0, number)
        history = build_history(self.run, self.loop.facts, self.loop._budget())
        if not self._fits(t0, self.plan.rung0_until):
            return True
        self._brain_done = False
        # A brain that proposes the whole round at once (the LLM, in one reply) is asked once here.
        batch = self._ask(history, lambda: self.loop.brain.analyst_round(history, self.plan.candidates))
        if batch is NO_ANSWER:
            return not self._brain_done
        at_once = self.loop.pool is not None
        chosen: list[tuple[Decision, list]] = []  # with --parallel: the round's decisions, run once all are in
        ran = 0
        for decision in self._proposals(history, batch, t0, reserved=lambda: len(chosen)):
            calls = self.loop.brain.take_calls()  # the round's one reply comes with its first candidate
            if at_once:
                chosen.append((decision, calls))
                continue
            n = self.run.next_iteration()
            self._run([Job(n, history.parent_iteration, decision, t0, place)], {n: calls})
            ran += 1
        if chosen:
            # Numbers are reserved now that the brain's failures, each an iteration of its own, are recorded.
            first = self.run.next_iteration()
            jobs = [Job(first + i, history.parent_iteration, d, t0, place) for i, (d, _) in enumerate(chosen)]
            self._run(jobs, {job.iteration: c for job, (_, c) in zip(jobs, chosen)})
        return bool(ran or chosen) or not self._brain_done

    def _proposals(self, history: Any, batch: list[Decision] | None, t0: float,
                   reserved: Callable[[], int]) -> Iterator[Decision]:
        """The round's decisions, one at a time, each distinct from what was tried on the parent and from the
        ones before it; a brain failure or a repeat is recorded as an iteration of its own. Ends when no
        further run fits (after `reserved()` runs proposed but not yet run) or the brain is done
        (_brain_done)."""
        pending: list[dict[str, Any]] = []
        for index in range(self.plan.candidates if batch is None else len(batch)):
            if not self._fits(t0, self.plan.rung0_until, reserved=reserved()):
                return
            seen = dataclasses.replace(history, tried_on_best=[*history.tried_on_best, *pending])
            decision = self._ask(seen, lambda: self.loop.brain.analyst(seen)) if batch is None else batch[index]
            if decision is NO_ANSWER:
                if self._brain_done:
                    return
                continue
            if decision.key() in seen.tried_keys():
                self.loop._record_brain_failure(self.run.next_iteration(), history.parent_iteration, AutomodelError(
                    f"the Analyst repeated a decision already tried on iteration {history.parent_iteration}: "
                    f"{decision.instruction}"), self.loop.brain.take_calls())
                continue
            pending.append({"key": decision.key(), "change": f"{decision.target}: (in this round)",
                            "status": "running in this round", "val_accuracy": None,
                            "detail": {"target": decision.target, "instruction": decision.instruction}})
            yield decision

    def _ask(self, history: Any, call: Callable[[], Any]) -> Any:
        """The brain's answer, or NO_ANSWER: when it has nothing left to propose (_brain_done is set), or when
        it failed (recorded as an iteration of its own; a failure of automodel's own side stops the run)."""
        from automodel.search.loop import FATAL

        try:
            return call()
        except BrainExhausted as err:
            self.loop.brain.take_calls()
            self.loop.progress.note(str(err))
            self._brain_done = True
        except FATAL:
            raise
        except AutomodelError as err:
            self.loop._record_brain_failure(self.run.next_iteration(), history.parent_iteration, err,
                                            self.loop.brain.take_calls())
        return NO_ANSWER

    def _editable(self) -> bool:
        """Whether some attempt left code an engineer could repair (the greedy loop's rescue path)."""
        records = self.run.iterations()
        return bool(records) and (self.run.iter_dir(records[-1].iteration) / "data.py").exists()

    # ---- rung 1
    def _promote(self) -> None:
        t1 = self.plan.rungs[1]
        place = Placement("promotion", 1, t1)
        promoted = {r.parent for r in self.run.iterations() if r.kind == "promotion"}
        jobs: list[Job] = []
        for source in top_candidates(self.run.iterations(), rung=0, count=self.plan.promote):
            if source.iteration in promoted:
                continue
            if not self._fits(t1, self.plan.explore_until, reserved=len(jobs)):
                self.loop.progress.note(f"automodel: no time left to promote iteration {source.iteration}")
                break
            decision = Decision("search", f"train iteration {source.iteration} again for {t1:.0f} s (rung 1)",
                                f"one of the best {self.plan.promote} at {self.plan.rungs[0]:.0f} s, "
                                f"validation {source.val_accuracy}")
            jobs.append(Job(self.run.next_iteration() + len(jobs), source.iteration, decision, t1, place,
                            given_from=source.iteration))
            if self.loop.pool is None:  # one after another: each checks the time left when its turn comes
                self._run(jobs)
                jobs = []
        self._run(jobs)

    # ---- budget
    def _fits(self, seconds: float, until: float, reserved: int = 0) -> bool:
        """Another run of `seconds` (after `reserved` ones already planned) ends before `until`, and
        iterations are left beside the final's. With --parallel, K runs of a round end together."""
        if self.run.next_iteration() + reserved + (1 if self.plan.final else 0) > self.loop.cfg.iters:
            return False
        run = seconds + OVERHEAD_GUESS
        if self.loop.pool is None:
            cost = run
        elif self.loop.cfg.time_budget is not None:  # wall time: the runs reserved so far end in waves of K
            cost = (reserved // len(self.loop.pool.slots) + 1) * run
        else:  # compute (Loop._spent): each run at once is charged its share of the machine
            cost = (reserved + 1) * run * self.loop.slot_share
        return self.loop._spent() + cost <= until


def stale_round(records: list[JournalRecord]) -> int | None:
    """The last exploration round, when it kept none of its candidates although they were judged fairly (at
    least one scored, none contended); None otherwise. Read from the journal, so `resume` decides the same."""
    last = max((r.round for r in records if r.kind == "candidate" and r.round), default=None)
    if last is None:
        return None
    runs = [r for r in records if r.kind == "candidate" and r.round == last]
    fair = any(r.scored for r in runs) and not any(r.contended for r in runs)
    return last if fair and not any(r.accepted for r in runs) else None


def top_candidates(records: list[JournalRecord], rung: int, count: int) -> list[JournalRecord]:
    """The best `count` scored, uncontended runs of one rung, best validation first (earlier wins ties)."""
    scored = [r for r in records if r.rung == rung and r.scored and not r.contended]
    return sorted(scored, key=lambda r: (-(r.val_accuracy or 0.0), r.iteration))[:count]


__all__ = ["BudgetSearch", "plan_for", "stale_round", "top_candidates"]
