"""The budget search, driven in milliseconds with tests/loopkit.py: rounds of K candidates, comparisons
only at equal fidelity, promotion, contended reruns, the final refit and ensemble selection, and
resume after a SIGKILL during a round and during the final refit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from loopkit import LABELS, NUM_VAL, FakeExecutor, ScriptedBrain, edit, failed, finals, make_loop

from automodel.search.ensemble import select
from automodel.search.plan import make_plan
from automodel.search.workspace import read_final

TESTS = Path(__file__).resolve().parent


def budget_loop(tmp_path, brain, execute, **cfg):
    return make_loop(tmp_path, brain, execute, **{"search": "budget", "time_per_iter": 20.0, "candidates": 2, **cfg})


def one_hot(correct: np.ndarray) -> np.ndarray:
    """Validation probabilities right exactly on the images where `correct` is True."""
    pred = np.where(correct, LABELS, (LABELS + 1) % 4)
    return np.eye(4, dtype=np.float32)[pred]


def right_on(*ranges: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(NUM_VAL, dtype=bool)
    for a, b in ranges:
        mask[a:b] = True
    return mask


# ------------------------------------------------------------------ the plan


def test_the_plan_reserves_the_final_refit_and_adds_a_promotion_rung_only_when_it_fits():
    small = make_plan(iters=20, time_per_iter=60.0, time_budget=600.0, final_share=0.6, candidates=None)
    assert small.final == pytest.approx(600 * 0.6 - 15)
    assert small.promote == 0 and len(small.rungs) == 1 and 20 <= small.rungs[0] <= 60
    assert small.explore_until == pytest.approx(240)
    large = make_plan(iters=40, time_per_iter=60.0, time_budget=4000.0, final_share=0.6, candidates=3)
    assert large.promote >= 2 and large.rungs[1] == pytest.approx(3 * large.rungs[0])
    assert any("rung 1" in reason for reason in large.reasons)
    # --iters 1 leaves no room for a refit: the best iteration is the result.
    assert make_plan(iters=1, time_per_iter=8.0, time_budget=None, final_share=0.6, candidates=None).final == 0


# ------------------------------------------------------------------ rounds, fidelity, final


def test_rounds_of_k_candidates_compare_at_rung_0_and_the_best_is_refit_on_train_and_val(tmp_path):
    brain = ScriptedBrain([edit(x) for x in "abcd"])
    execute = FakeExecutor([0.5, 0.6, 0.55, 0.7, 0.65, 0.8])
    loop = budget_loop(tmp_path, brain, execute, iters=6)
    out = loop.fit()
    records = finals(loop)
    assert [r.kind for r in records] == ["candidate"] * 5 + ["refit"]
    assert [r.round for r in records[:5]] == [0, 1, 1, 2, 2]
    # Both candidates of a round start from the best when the round began.
    assert [r.parent for r in records[1:5]] == [1, 1, 2, 2]
    assert [r.accepted for r in records[:5]] == [True, True, False, True, False]
    assert {r.fidelity for r in records[:5]} == {20.0} and all(r.rung == 0 for r in records[:5])
    refit = records[5]
    assert refit.parent == 4 and refit.val_accuracy is None and refit.test_accuracy == pytest.approx(0.79)
    assert execute.refits == [False] * 5 + [True]
    # The refit gets what is left of the budget, far more than a candidate.
    assert refit.fidelity > 5 * 20.0
    final = out["final"]
    assert final["kind"] == "refit" and final["members"] == [4] and final["refits"] == [6]
    assert final["val_accuracy"] is None and final["test_accuracy"] == pytest.approx(0.79)
    assert (loop.run.path / "final" / "model.pt").read_bytes() == b"weights 0.800000"
    assert out["best"]["iteration"] == 4  # best/ stays the best explored iteration


def test_with_a_time_budget_a_round_that_keeps_nothing_ends_exploration_and_the_refit_gets_the_time(tmp_path):
    def run(sub: str, outcomes: list, **cfg):
        loop = budget_loop(tmp_path / sub, ScriptedBrain([edit(x) for x in "abcdef"]), FakeExecutor(outcomes),
                           **{"iters": 12, **cfg})
        loop.fit()
        return loop, finals(loop)

    # Round 1 keeps nothing (0.48, 0.49 against 0.5): with --time-budget the search stops exploring and the
    # refit gets what the remaining rounds would have used.
    loop, records = run("wall", [0.5, 0.48, 0.49, 0.8], time_budget=600.0)
    assert [r.kind for r in records] == ["candidate"] * 3 + ["refit"]
    plan = loop.run.info["search_plan"]
    assert plan["stop_when_stale"] and records[-1].parent == 1
    assert records[-1].fidelity > plan["final"] + 100
    assert "round 1 kept none of its candidates" in loop.progress.stream.getvalue()
    # A round that keeps a candidate does not end it: round 2 runs, keeps nothing, and ends exploration.
    _, records = run("kept", [0.5, 0.6, 0.49, 0.55, 0.58, 0.8], time_budget=600.0)
    assert [r.round for r in records[:-1]] == [0, 1, 1, 2, 2] and records[-1].parent == 2
    # A candidate still contended when run again is no verdict: the round after it runs.
    starved = {"val": 0.45, "compute": {"images_per_second": 300.0, "cpu_utilisation": 0.3, "steal_share": 0.0}}
    fair = {"val": 0.5, "compute": {"images_per_second": 1000.0, "cpu_utilisation": 0.95, "steal_share": 0.0}}
    _, records = run("contended", [fair, starved, starved, 0.48, 0.46, 0.49, 0.8], time_budget=600.0)
    assert records[1].contended and max(r.round or 0 for r in records) == 2
    # With --iters x --time-per-iter the final run keeps to its planned time, so exploration goes on.
    _, records = run("iters", [0.5, 0.48, 0.49, 0.47, 0.46, 0.8], iters=6)
    assert [r.kind for r in records] == ["candidate"] * 5 + ["refit"]


def test_promoted_runs_are_compared_only_with_each_other(tmp_path):
    brain = ScriptedBrain([edit(x) for x in "abcd"])
    # rung 0: 0.5, then a b | c d (d fails); rung 1: the top 3 at 3x the time, then the refit.
    execute = FakeExecutor([0.5, 0.7, 0.6, 0.65, failed(), 0.55, 0.62, 0.58, 0.9])
    loop = budget_loop(tmp_path, brain, execute, iters=20, time_budget=4000.0, time_per_iter=60.0, candidates=2,
                       max_repairs=0)
    plan = loop.run.info  # written by the search
    out = loop.fit()
    plan = loop.run.info["search_plan"]
    assert plan["promote"] == 2
    records = finals(loop)
    promotions = [r for r in records if r.kind == "promotion"]
    # The best two at rung 0 (iterations 2 and 4), best first, each trained again at rung 1.
    assert [p.parent for p in promotions] == [2, 4]
    assert {p.rung for p in promotions} == {1} and {p.fidelity for p in promotions} == {plan["rungs"][1]}
    # The first promoted run is kept though it scores below rung 0's best: it has no rival at its fidelity.
    assert promotions[0].accepted and promotions[0].evidence is None
    assert promotions[1].accepted and promotions[1].evidence is not None
    refit = records[-1]
    assert refit.kind == "refit" and refit.parent == promotions[1].iteration
    assert out["final"]["members"] == [promotions[1].iteration]


def test_a_contended_candidate_is_run_again_and_judged_on_the_fair_run(tmp_path):
    fair = {"images_per_second": 1000.0, "cpu_utilisation": 0.95, "steal_share": 0.0}
    starved = {"images_per_second": 350.0, "cpu_utilisation": 0.4, "steal_share": 0.0}
    stolen = {"images_per_second": 900.0, "cpu_utilisation": 0.9, "steal_share": 0.5}
    wider = {"images_per_second": 500.0, "cpu_utilisation": 0.95, "steal_share": 0.0}  # slower, cores still busy
    brain = ScriptedBrain([edit("a"), edit("b"), edit("c"), edit("d")])
    execute = FakeExecutor([
        {"val": 0.6, "compute": fair},
        {"val": 0.65, "compute": stolen}, {"val": 0.52, "compute": stolen},    # a: contended twice
        {"val": 0.5, "compute": starved}, {"val": 0.55, "compute": fair},      # b: contended, then fair
        {"val": 0.58, "compute": wider},                                       # c: slower but not contended
        {"val": 0.59, "compute": fair},                                        # d
        0.8,
    ])
    loop = budget_loop(tmp_path, brain, execute, iters=6)
    loop.fit()
    journal = loop.run.journal()
    stashed = [r for r in journal if not r.final]
    assert [(r.iteration, r.contended) for r in stashed] == [(2, True), (3, True)]
    assert all(r.attempt_dir and (loop.run.iter_dir(r.iteration) / r.attempt_dir).is_dir() for r in stashed)
    a, b, c, d = (r for r in finals(loop) if r.iteration in (2, 3, 4, 5))
    # Neither kept nor rejected on two starved runs, though the first scored above the best.
    assert a.contended and not a.accepted and a.val_accuracy == 0.52
    assert b.val_accuracy == 0.55 and not b.contended and not b.accepted
    assert not c.contended and len(execute.calls) == 8
    assert not d.accepted and d.parent == 1
    # Only the fairly judged edits count as tried on the best: the Analyst may propose `a` again.
    from automodel.search.history import build_history

    history = build_history(loop.run, loop.facts, loop._budget())
    assert history.parent_iteration == 1
    assert history.tried_keys() == {"train:change b", "train:change c", "train:change d"}


def test_a_failed_refit_leaves_the_best_iteration_as_the_final_model(tmp_path):
    loop = budget_loop(tmp_path, ScriptedBrain([edit("a")]), FakeExecutor([0.5, 0.6, failed()]), iters=3)
    out = loop.fit()
    assert finals(loop)[-1].kind == "refit" and finals(loop)[-1].status == "failed"
    assert out["final"]["kind"] == "iteration" and out["final"]["members"] == [2]
    assert out["final"]["test_accuracy"] == pytest.approx(0.59) and "refit of iteration 2 failed" in \
        out["final"]["reason"]


# ------------------------------------------------------------------ ensembles


def test_greedy_selection_finds_complementary_members_and_beats_the_best_by_paired_evidence():
    a, b, c = one_hot(right_on((0, 28))), one_hot(right_on((12, 40))), one_hot(right_on((0, 12), (28, 40)))
    pick = select([a, b, c], LABELS)
    assert sorted(pick.members) == [0, 1, 2] and pick.accuracy == 1.0 and pick.best_single_accuracy == 0.7
    assert pick.evidence.gained == 12 and pick.evidence.lost == 0 and pick.beats_single(0.002)
    # Nested predictions (each right on a prefix) never add anything to the best alone.
    nested = [one_hot(right_on((0, k))) for k in (30, 25, 20)]
    same = select(nested, LABELS)
    assert same.members == [0] and not same.beats_single(0.002)


def complementary_run(tmp_path, train: float):
    """Three candidates at validation 0.7 whose average is right everywhere, each with `train` accuracy on
    a training sample; the run continues to its final model."""
    a, b, c = one_hot(right_on((0, 28))), one_hot(right_on((12, 40))), one_hot(right_on((0, 12), (28, 40)))
    brain = ScriptedBrain([edit(x) for x in "abc"])
    members = [{"val": 0.7, "probs": p, "train": train} for p in (a, b, c)]
    loop = budget_loop(tmp_path, brain, FakeExecutor([0.5, *members, *members]), iters=12, time_budget=600.0)
    return loop, loop.fit()


def test_an_ensemble_that_wins_by_more_than_noise_becomes_the_final_model(tmp_path):
    # Over-fit members (train 0.95, val 0.7: most of the errors are generalisation gap): averaging helps.
    loop, out = complementary_run(tmp_path, train=0.95)
    final = out["final"]
    assert final["kind"] == "ensemble" and sorted(final["members"]) == [2, 3, 4]
    refits = [r for r in finals(loop) if r.kind == "refit"]
    assert sorted(r.parent for r in refits) == [2, 3, 4] and len({r.fidelity for r in refits}) == 1
    # The members share what was left of the budget.
    assert refits[0].fidelity < 600 / 3
    # Test accuracy of the averaged test probabilities of the refit members, scored by the loop.
    assert final["test_accuracy"] == pytest.approx(1.0)
    folders = sorted(p.name for p in (loop.run.path / "final").iterdir() if p.is_dir())
    assert folders == ["member_1", "member_2", "member_3"]
    spec = read_final(loop.run.path)
    assert spec["selection"]["evidence"]["gained"] == 12


def test_an_ensemble_of_under_fit_members_gives_its_time_to_one_longer_refit(tmp_path):
    # The same winning ensemble, but its members are still under-fit (train 0.71 ~ val 0.7): the k refits
    # would share the final time, and one run with all of it gains more, so the best alone is refit.
    loop, out = complementary_run(tmp_path, train=0.71)
    final = out["final"]
    assert final["kind"] == "refit" and final["members"] == [2]
    refits = [r for r in finals(loop) if r.kind == "refit"]
    assert len(refits) == 1 and refits[0].fidelity > 600 / 3
    spec = read_final(loop.run.path)
    assert spec["selection"]["evidence"]["gained"] == 12  # the ensemble was found, and recorded
    assert "under-fit" in spec["reason"] and "0.03" in spec["reason"]


# ------------------------------------------------------------------ kills and resume

CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
from loopkit import FakeExecutor, ScriptedBrain, edit, make_loop

class Marking(FakeExecutor):
    def __call__(self, iter_dir, time_limit, refit=False):
        Path(iter_dir, "started").write_text("1")
        if len(self.calls) == {hang_at}:
            time.sleep(60)  # killed here
        return super().__call__(iter_dir, time_limit, refit)

brain = ScriptedBrain([edit(x) for x in "abcdef"])
loop = make_loop(Path({tmp!r}), brain, Marking([0.5, 0.6, 0.55, 0.7, 0.65, 0.8]), iters=6, search="budget",
                 time_per_iter=20.0, candidates=2)
loop.fit()
"""


def kill_at(tmp_path: Path, hang_at: int) -> None:
    """Run the loop in a real process and SIGKILL it while call `hang_at` (0-based) is running."""
    code = CHILD.format(tests=str(TESTS), tmp=str(tmp_path), hang_at=hang_at)
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    marker = tmp_path / "ws" / "run" / f"iter_{hang_at + 1:03d}" / "started"
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), "the child never reached the call to kill it in"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("hang_at, phase", [(2, "round"), (5, "final refit")])
def test_resume_after_a_sigkill_keeps_completed_records_and_finishes_the_run(tmp_path, hang_at, phase):
    kill_at(tmp_path, hang_at)
    run_dir = tmp_path / "ws" / "run"
    before = (run_dir / "journal.jsonl").read_bytes()
    assert len(before.splitlines()) == hang_at
    assert read_final(run_dir) is None
    # What `automodel resume` does before driving the loop again.
    from automodel.search.workspace import RunDir

    run = RunDir.open(run_dir)
    assert run.remove_incomplete() == [hang_at + 1]
    run.repair_best()
    left = [0.5, 0.6, 0.55, 0.7, 0.65, 0.8][hang_at:]
    brain = ScriptedBrain([edit(x) for x in "abcdef"[hang_at - 1:]] if hang_at < 5 else [])
    loop = budget_loop(tmp_path, brain, FakeExecutor(left), iters=6)
    out = loop.fit()
    after = (run_dir / "journal.jsonl").read_bytes()
    assert after.startswith(before), f"records completed before the kill ({phase}) changed"
    records = finals(loop)
    assert [r.iteration for r in records] == [1, 2, 3, 4, 5, 6] and records[-1].kind == "refit"
    assert out["final"]["kind"] == "refit" and out["final"]["members"] == [4]
    assert json.loads(after.splitlines()[-1])["kind"] == "refit"


def test_resume_with_more_iterations_searches_on_and_makes_the_final_model_again(tmp_path):
    first = budget_loop(tmp_path, ScriptedBrain([edit("a")]), FakeExecutor([0.5, 0.6, 0.7]), iters=3)
    assert first.fit()["final"]["refits"] == [3]
    second = budget_loop(tmp_path, ScriptedBrain([edit(x) for x in "bcde"]),
                         FakeExecutor([0.65, 0.75, 0.7, 0.72, 0.9]), iters=8)
    out = second.fit()
    records = finals(second)
    assert records[2].kind == "refit" and all(r.kind == "candidate" for r in records[3:-1])
    # The new final model refits the new best; the earlier refit stays in the journal as history.
    best = max((r for r in records if r.kind == "candidate"), key=lambda r: r.val_accuracy)
    assert out["final"]["members"] == [best.iteration] and out["final"]["refits"] == [records[-1].iteration]
    assert records[-1].parent == best.iteration and out["final"]["test_accuracy"] == pytest.approx(0.89)


# ------------------------------------------------------------------ --iters 1: one run on train+val


def test_with_one_iteration_and_a_test_split_the_plan_is_one_run_on_train_and_val():
    plan = make_plan(iters=1, time_per_iter=60.0, time_budget=None, final_share=0.6, candidates=None, has_test=True)
    assert plan.one_shot and plan.rungs == (60.0,) and plan.final == 0
    assert "train+val" in plan.reasons[0]
    # Without a test split nothing else could measure it: the validation split stays held out.
    held = make_plan(iters=1, time_per_iter=60.0, time_budget=None, final_share=0.6, candidates=None, has_test=False)
    assert not held.one_shot
    assert not make_plan(iters=2, time_per_iter=60.0, time_budget=None, final_share=0.6, candidates=None,
                         has_test=True).one_shot


def test_one_iteration_trains_the_first_pipeline_on_train_and_val_and_makes_it_the_final_model(tmp_path):
    brain = ScriptedBrain()
    execute = FakeExecutor([0.8])
    out = budget_loop(tmp_path, brain, execute, iters=1, time_per_iter=60.0).fit()
    assert execute.refits == [True] and execute.calls[0][1] == 60.0
    (record,) = finals(budget_loop(tmp_path, brain, execute, iters=1))
    # Its validation images were trained on: no validation score is kept, the test split measures it.
    assert record.kind == "refit" and record.parent is None and record.accepted
    assert record.val_accuracy is None and record.test_accuracy == pytest.approx(0.79)
    assert json.loads((tmp_path / "ws" / "run" / "iter_001" / "metrics.json").read_text())["val_accuracy"] is None
    assert out["final"]["kind"] == "refit" and out["final"]["members"] == [1] == out["final"]["refits"]
    assert out["final"]["test_accuracy"] == pytest.approx(0.79) and brain.calls["analyst"] == 0
    assert read_final(tmp_path / "ws" / "run")["members"][0]["dir"] == "."


def test_resuming_a_one_shot_run_with_more_iterations_runs_its_pipeline_held_out_then_searches(tmp_path):
    budget_loop(tmp_path, ScriptedBrain(), FakeExecutor([0.8]), iters=1).fit()
    execute = FakeExecutor([0.6, 0.7, 0.65, 0.9])
    out = budget_loop(tmp_path, ScriptedBrain([edit(x) for x in "abc"]), execute, iters=5).fit()
    records = finals(budget_loop(tmp_path, ScriptedBrain(), execute, iters=5))
    # Iteration 2 is the one-shot pipeline again, scored on held-out validation images: the baseline of rung 0.
    assert records[1].kind == "candidate" and records[1].parent is None and records[1].val_accuracy == 0.6
    assert (tmp_path / "ws" / "run" / "iter_002" / "data.py").read_text() == \
        (tmp_path / "ws" / "run" / "iter_001" / "data.py").read_text()
    assert execute.refits == [False, False, False, True]
    assert out["final"]["members"] == [3] and out["final"]["refits"] == [5]


# ------------------------------------------------------------------ waiting for the brain


def test_waiting_for_the_brain_is_not_charged_to_a_budget_of_iterations_but_is_to_a_time_budget(tmp_path):
    from automodel.search.brain_clock import TimedBrain

    class SlowArchitect(ScriptedBrain):
        def architect(self, brief):
            time.sleep(0.2)
            return super().architect(brief)

    timed = TimedBrain(SlowArchitect())
    timed.architect(None)
    timed.take_calls()  # bookkeeping is not timed
    assert 0.2 <= timed.seconds < 1.0 and timed.name == "scripted"

    def explored(sub: str, **cfg) -> list[str]:
        # The run starts 60 s late, all of it spent waiting for the brain (a slow model's replies).
        loop = budget_loop(tmp_path / sub, ScriptedBrain([edit(x) for x in "abcd"]),
                           FakeExecutor([0.5, 0.6, 0.55, 0.7, 0.65, 0.8]), started=time.monotonic() - 60, **cfg)
        loop.brain.seconds = 60.0
        loop.fit()
        return [r.kind for r in finals(loop)]

    # --iters 6 x --time-per-iter 20: a compute budget, the 60 s of waiting leave it whole.
    assert explored("iters", iters=6) == ["candidate"] * 5 + ["refit"]
    # --time-budget 210 (the same total, as wall time): the 60 s are spent, and of its 84 s of exploration
    # too little is left for a round after the first pipeline.
    assert explored("wall", iters=6, time_budget=210.0) == ["candidate", "refit"]
