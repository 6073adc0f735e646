"""The final phase of the budget search: choose, refit on train+val, write final/.

The choice (run.json "final_choice") is made once, from the validation
predictions of the best runs at the highest rung: the best pipeline, or a
greedy ensemble of several when it beats the best by more than noise and its
members are limited by variance rather than by training time. Each
member is then retrained on train+val with the reserved time (a "refit"
iteration; its validation score is not held out, so it is not used) and
scored once on test. final/FINAL.json, written last, is the commit point;
when a refit fails the final model falls back to the best iteration as it was.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from automodel.core import CallRecord, Decision, ErrorInfo, JournalRecord, Pipeline, Usage
from automodel.errors import HarnessError
from automodel.files import atomic_write_json, remove_tree
from automodel.search.calls import save_calls
from automodel.search.ensemble import MAX_STEPS, VARIANCE_SHARE, select, variance_share
from automodel.search.plan import MIN_TRAIN_SECONDS, OVERHEAD_GUESS, SearchPlan
from automodel.search.workspace import BEST_FILES, FINAL, FINAL_FILE, RunDir, read_final

if TYPE_CHECKING:
    from automodel.search.loop import Loop

CHOICE_KEY = "final_choice"   # in run.json
REFIT_DATA = "data_refit"     # the bundle with train+val as the training split


class FinalPhase:
    def __init__(self, loop: "Loop", plan: SearchPlan):
        self.loop, self.run, self.plan = loop, loop.run, plan

    def done(self) -> bool:
        return read_final(self.run.path) is not None

    def started(self) -> bool:
        return CHOICE_KEY in self.run.info

    def reopen(self) -> None:
        """Forget the final model (its refit records stay in the journal, as history)."""
        remove_tree(self.run.path / FINAL)
        self.run.drop_info(CHOICE_KEY)

    def make(self) -> None:
        remove_tree(self.run.path / ".final.tmp")
        choice = self.run.info.get(CHOICE_KEY) or self._choose()
        if choice is None:
            return  # nothing trained: there is no model to make final
        if choice["kind"] == "iteration":
            self._write_iteration(choice["members"][0], choice["reason"])
            return
        # This choice's refits: those made after it (an extended run may hold refits of an earlier final model).
        refits = {r.parent: r for r in self.run.iterations() if r.kind == "refit" and r.iteration >= choice["after"]}
        for member in choice["members"]:
            if member not in refits:
                refits[member] = self._refit(member, choice["seconds"])
        failed = [refits[m] for m in choice["members"] if not refits[m].ok]
        if failed:
            best = top_scored(self.run)
            self._write_iteration(best.iteration, f"the refit of iteration {failed[0].parent} failed "
                                  f"({failed[0].status}), so the final model is the best iteration as it was")
            return
        self._write_refit(choice, [refits[m] for m in choice["members"]])

    def make_one_shot(self) -> None:
        """final/ for a one-shot run (plan.one_shot): its one pipeline, already trained on train+val."""
        if self.done():
            return
        run = one_shot_run(self.run.iterations())
        if run is None:
            return  # it failed: there is no model to make final
        choice = {"kind": "refit", "weights": [1], "seconds": run.fidelity,
                  "reason": "--iters 1: the first pipeline, trained once on every labelled image"}
        self._write_refit(choice, [run])

    # ---- the choice
    def _choose(self) -> dict[str, Any] | None:
        from automodel.search.budget import top_candidates

        records = self.run.iterations()
        rung = max((r.rung or 0 for r in records if r.scored and not r.contended and r.rung is not None),
                   default=0)
        candidates = [r for r in top_candidates(records, rung, MAX_STEPS)
                      if (self.run.iter_dir(r.iteration) / "probs_val.npy").is_file()]
        best = top_scored(self.run)
        if best is None:
            return None
        left = self.plan.total - self.loop._spent()
        slots = self.loop.cfg.iters - self.run.next_iteration() + 1
        choice: dict[str, Any] = {"kind": "iteration", "members": [best.iteration], "weights": [1],
                                  "selection": None, "after": self.run.next_iteration()}
        # With --time-budget, all that is left (more than planned when exploration ended early); with only
        # --iters x --time-per-iter the budget is an estimate, so the final run keeps to the plan.
        single_seconds = left - OVERHEAD_GUESS
        if self.loop.cfg.time_budget is None:
            single_seconds = min(single_seconds, self.plan.final)
        if self.plan.final <= 0 or slots < 1 or single_seconds < MIN_TRAIN_SECONDS:
            choice["reason"] = "no time or iteration was left for a final refit"
        else:
            choice.update(kind="refit", seconds=round(single_seconds, 1),
                          reason=f"iteration {best.iteration} had the best validation accuracy at rung {rung}")
            self._consider_ensemble(choice, candidates, rung, left, slots)
        self.run.update_info(**{CHOICE_KEY: choice})
        self.loop.progress.note(f"automodel: final model: {choice['reason']}")
        return choice

    def _consider_ensemble(self, choice: dict[str, Any], candidates: list[JournalRecord], rung: int, left: float,
                           slots: int) -> None:
        labels = self.loop.val_labels
        if len(candidates) < 2 or labels is None:
            return
        probs = [np.load(self.run.iter_dir(r.iteration) / "probs_val.npy", allow_pickle=False) for r in candidates]
        if any(p.shape != probs[0].shape or len(p) != len(labels) for p in probs):
            return
        pick = select(probs, labels)
        members = [candidates[i].iteration for i in pick.members]
        choice["selection"] = {"members": members, "weights": pick.weights(), "val_accuracy": round(pick.accuracy, 4),
                               "best_single_val_accuracy": round(pick.best_single_accuracy, 4),
                               "evidence": pick.evidence.to_json()}
        each = (min(left, self.plan.final + OVERHEAD_GUESS) if self.loop.cfg.time_budget is None else left)
        each = (each - OVERHEAD_GUESS * len(members)) / len(members)
        fidelity = self.plan.rungs[min(rung, len(self.plan.rungs) - 1)]
        if len(members) < 2:
            choice["reason"] += "; no ensemble of the best runs scored higher on validation"
        elif not pick.beats_single(self.loop.cfg.min_delta):
            choice["reason"] += (f"; a greedy ensemble of {len(members)} scored {pick.accuracy:.4f}, not better by "
                                 f"more than noise (z {pick.evidence.z:.1f})")
        elif (share := variance_share([(r.train_accuracy, r.val_accuracy) for r in candidates
                                       if r.iteration in members])) is None or share < VARIANCE_SHARE:
            gap = "unknown" if share is None else f"{share:.2f}"
            choice["reason"] += (f"; a greedy ensemble of {len(members)} scored {pick.accuracy:.4f} (z "
                                 f"{pick.evidence.z:.1f}), but its members are under-fit (share of their validation "
                                 f"errors that is train/validation gap: {gap}, below {VARIANCE_SHARE}): one longer "
                                 "run gains more than the same time split between several")
        elif len(members) > slots or each < fidelity:
            choice["reason"] += (f"; a greedy ensemble of {len(members)} scored {pick.accuracy:.4f} (z "
                                 f"{pick.evidence.z:.1f}) but refitting each would leave {each:.0f} s, less than "
                                 f"the {fidelity:.0f} s it was chosen at")
        else:
            choice.update(kind="ensemble", members=members, weights=pick.weights(), seconds=round(each, 1),
                          reason=f"a greedy ensemble of iterations {members} scored {pick.accuracy:.4f} on "
                          f"validation against {pick.best_single_accuracy:.4f} for the best alone "
                          f"(z {pick.evidence.z:.1f})")

    # ---- refits
    def _refit(self, member: int, seconds: float) -> JournalRecord:
        loop, run = self.loop, self.run
        n = run.next_iteration()
        started = time.monotonic()
        chosen = run.pipeline(member)
        num_val = len(loop.val_labels) if loop.val_labels is not None else 0
        scaled = loop.brain.scale(chosen, seconds, int(loop.facts.get("num_train", 0)) + num_val,
                                  run.compute(member).get("images_per_second"))
        calls = loop.brain.take_calls()  # an LLM's resize request, saved with the refit
        pipeline, note = scaled if scaled is not None else (chosen, None)
        decision = Decision("search", f"retrain iteration {member} on train+val for {seconds:.0f} s",
                            "final model" + (f"; {note}" if note else ""))
        loop.progress.start(n, loop.cfg.iters, "Final refit", decision.instruction, decision.reason)
        d, usage = self._stage_refit(n, pipeline, calls)
        res = loop.execute(d, seconds, refit=True)
        if res.status not in ("ok", "harness_error") and pipeline is not chosen:
            # The resized module never ran before; the chosen pipeline did: refit that, in the time left.
            failed = res.error.message if res.error else res.status
            loop.progress.note(f"automodel: the resized pipeline failed ({failed[:200]}); refitting iteration "
                               f"{member} as it was")
            decision = replace(decision, reason=f"final model; {note}, but that pipeline failed ({failed[:200]}), "
                               "so the chosen one was refit as it was")
            d, _ = self._stage_refit(n, chosen, calls)
            res = loop.execute(d, max(MIN_TRAIN_SECONDS, seconds - (time.monotonic() - started)), refit=True)
        if res.status == "harness_error":
            err = res.error or ErrorInfo("sandbox", None, "HarnessError", "unknown")
            raise HarnessError(f"The final refit could not run because automodel's own side failed: {err.message}")
        # The validation images were training images here: their score is not a held-out one, so it is not kept.
        res = replace(res, val_accuracy=None)
        atomic_write_json(d / "metrics.json", res.to_json())
        record = replace(loop._record(n, member, decision, res, started, 0, usage, final=True),
                         decision_key=None, kind="refit", fidelity=seconds)
        run.append(record)
        loop.on_iteration(n)
        loop.progress.finish(record, run.best_record(), loop._elapsed())
        return record

    def _stage_refit(self, n: int, pipeline: Pipeline, calls: list[CallRecord]) -> tuple[Path, Usage]:
        """A fresh folder for refit iteration n holding `pipeline` and the brain's calls for it."""
        d = self.run.fresh_iter_dir(n)
        usage = save_calls(calls, d, "scale")
        self.loop._write_pipeline(d, pipeline)
        return d, usage

    # ---- final/
    def _write_refit(self, choice: dict[str, Any], refits: list[JournalRecord]) -> None:
        weights = choice["weights"]
        if len(refits) == 1:
            test = refits[0].test_accuracy
            layout = {".": refits[0]}
        else:
            test = self._ensemble_test(refits, weights)
            layout = {f"member_{i + 1}": r for i, r in enumerate(refits)}
        info = self.run.path / REFIT_DATA / "info.json"
        spec = {
            "kind": choice["kind"],
            "val_accuracy": None,  # validation images were trained on
            "test_accuracy": test,
            # A one-shot run has no parent: it is both the pipeline and its refit.
            "members": [{"iteration": r.parent or r.iteration, "refit": r.iteration, "weight": w, "dir": name}
                        for (name, r), w in zip(layout.items(), weights)],
            "seconds": round(sum(r.seconds for r in refits), 1),
            "training_seconds": choice["seconds"],
            "reason": choice["reason"],
            "selection": choice.get("selection"),
        }
        self._commit({name: (self.run.iter_dir(r.iteration), info) for name, r in layout.items()}, spec)

    def _write_iteration(self, iteration: int, reason: str) -> None:
        record = next(r for r in self.run.iterations() if r.iteration == iteration)
        spec = {"kind": "iteration", "val_accuracy": record.val_accuracy, "test_accuracy": record.test_accuracy,
                "members": [{"iteration": iteration, "refit": None, "weight": 1, "dir": "."}], "seconds": 0.0,
                "training_seconds": record.fidelity, "reason": reason,
                "selection": (self.run.info.get(CHOICE_KEY) or {}).get("selection")}
        self._commit({".": (self.run.iter_dir(iteration), self.run.path / "data" / "info.json")}, spec)

    def _ensemble_test(self, refits: list[JournalRecord], weights: list[int]) -> float | None:
        labels = self.loop.test_labels
        if labels is None or not len(labels):
            return None
        total = None
        for r, w in zip(refits, weights):
            probs = np.load(self.run.iter_dir(r.iteration) / "probs_test.npy", allow_pickle=False) * w
            total = probs if total is None else total + probs
        return round(float((total.argmax(1) == labels).mean()), 4)

    def _commit(self, sources: dict[str, tuple[Path, Path]], spec: dict[str, Any]) -> None:
        """Write final/ next to the run and swap it in; FINAL.json inside it is the commit point."""
        tmp = self.run.path / ".final.tmp"
        remove_tree(tmp)
        for name, (src, info) in sources.items():
            dest = tmp / name
            dest.mkdir(parents=True, exist_ok=True)
            for file in BEST_FILES:
                if (src / file).is_file() and not (src / file).is_symlink():
                    shutil.copy2(src / file, dest / file)
            if info.is_file():
                shutil.copy2(info, dest / "info.json")
        atomic_write_json(tmp / FINAL_FILE, spec)
        final = self.run.path / FINAL
        remove_tree(final)
        os.replace(tmp, final)
        test = spec["test_accuracy"]
        self.loop.progress.note(f"automodel: final model ({spec['kind']}): test accuracy "
                                f"{'-' if test is None else f'{test:.4f}'}; {spec['reason']}")


def one_shot_run(records: list[JournalRecord]) -> JournalRecord | None:
    """The one run of a one-shot plan (the first pipeline, trained on train+val), when it trained."""
    return next((r for r in records if r.kind == "refit" and r.parent is None and r.ok), None)


def top_scored(run: RunDir) -> JournalRecord | None:
    """The run's best iteration: the best of the highest rung that has one."""
    from automodel.search.budget import top_candidates

    records = run.iterations()
    for rung in sorted({r.rung for r in records if r.rung is not None}, reverse=True):
        top = top_candidates(records, rung, 1)
        if top:
            return top[0]
    return run.best_record()
