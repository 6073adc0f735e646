"""The greedy loop (the published protocol), driven in milliseconds with tests/loopkit.py:
its keep/discard rule, records, best/, repairs and stops, exactly as in a real run."""

from __future__ import annotations

import pytest
from loopkit import NUM_VAL, PIPELINE, FakeExecutor, ScriptedBrain, edit, failed, finals, make_loop

from automodel.agents.expert.brain import ExpertBrain
from automodel.errors import BrainError, HarnessError, LLMServiceError

# ------------------------------------------------------------------ keep and discard


def test_only_improvements_are_kept_and_best_follows_them(tmp_path):
    brain = ScriptedBrain([edit("a"), edit("b"), edit("c"), edit("d")])
    loop = make_loop(tmp_path, brain, FakeExecutor([0.5, 0.6, 0.55, 0.7, 0.7]), iters=5)
    out = loop.fit()
    records = finals(loop)
    assert [r.accepted for r in records] == [True, True, False, True, False]
    accepted = [r.val_accuracy for r in records if r.accepted]
    assert accepted == sorted(accepted) and len(set(accepted)) == len(accepted)  # strictly rising
    assert out["best"]["iteration"] == 4 and loop.run.best_iteration_on_disk() == 4
    assert (loop.run.path / "best" / "model.pt").read_bytes() == b"weights 0.700000"
    # Each edit starts from the best of its time.
    assert [r.parent for r in records] == [None, 1, 2, 2, 4]
    # The paired evidence of each edit against the best: gained - lost is its change in accuracy.
    for r in records[1:]:
        assert r.evidence["gained"] - r.evidence["lost"] == round(
            (r.val_accuracy - 0.6 if r.iteration == 3 else r.val_accuracy - {2: 0.5, 4: 0.6, 5: 0.7}[r.iteration])
            * NUM_VAL
        )


def test_a_gain_below_min_delta_is_not_kept(tmp_path):
    loop = make_loop(tmp_path, ScriptedBrain([edit("a")]), FakeExecutor([0.5, 0.525]), iters=2, min_delta=0.05)
    loop.fit()
    assert [r.accepted for r in finals(loop)] == [True, False]


# ------------------------------------------------------------------ repairs


def test_a_failed_run_is_repaired_by_the_owning_engineer(tmp_path):
    brain = ScriptedBrain([edit("a", "model")])
    execute = FakeExecutor([0.5, failed("data"), 0.6])
    loop = make_loop(tmp_path, brain, execute, iters=2)
    loop.fit()
    records = loop.run.journal()
    assert [(r.iteration, r.final, r.status) for r in records] == [
        (1, True, "ok"),
        (2, False, "failed"),
        (2, True, "ok"),
    ]
    assert records[1].attempt_dir == "attempt_1" and (loop.run.iter_dir(2) / "attempt_1" / "metrics.json").is_file()
    assert records[2].repairs == 1 and records[2].accepted
    assert brain.calls["repair"] == 1


def test_repairs_stop_at_max_repairs_and_the_failure_is_recorded(tmp_path):
    brain = ScriptedBrain([edit("a")])
    execute = FakeExecutor([0.5, failed(), failed(), failed()])
    loop = make_loop(tmp_path, brain, execute, iters=2, max_repairs=2)
    loop.fit()
    final = finals(loop)[-1]
    assert final.status == "failed" and final.repairs == 2 and not final.accepted
    assert len(execute.calls) == 4 and brain.calls["repair"] == 2
    assert loop.run.best_record().iteration == 1


def test_an_engineer_that_cannot_repair_leaves_the_failure(tmp_path):
    brain = ScriptedBrain([edit("a")], repairs=[BrainError("no idea")])
    loop = make_loop(tmp_path, brain, FakeExecutor([0.5, failed()]), iters=2)
    loop.fit()
    assert finals(loop)[-1].status == "failed" and finals(loop)[-1].repairs == 0


# ------------------------------------------------------------------ brains


def test_a_brain_error_is_recorded_and_the_run_goes_on(tmp_path):
    brain = ScriptedBrain([BrainError("malformed reply"), edit("a")])
    loop = make_loop(tmp_path, brain, FakeExecutor([0.5, 0.6]), iters=3)
    loop.fit()
    records = finals(loop)
    assert [r.status for r in records] == ["ok", "brain_error", "ok"]
    assert records[1].target is None and "malformed reply" in records[1].error["message"]


def test_a_fatal_llm_error_stops_the_run(tmp_path):
    brain = ScriptedBrain([LLMServiceError("server down")])
    loop = make_loop(tmp_path, brain, FakeExecutor([0.5]), iters=3)
    with pytest.raises(LLMServiceError):
        loop.fit()
    assert len(finals(loop)) == 1


def test_a_decision_is_never_run_twice_on_the_same_parent(tmp_path):
    same = edit("lr")
    brain = ScriptedBrain([same, same, edit("width", "model")])
    execute = FakeExecutor([0.5, 0.45, 0.6])
    loop = make_loop(tmp_path, brain, execute)
    loop.fit()
    records = finals(loop)
    assert [r.status for r in records] == ["ok", "ok", "brain_error", "ok"]
    assert "repeated a decision already tried on iteration 1" in records[2].error["message"]
    assert len(execute.calls) == 3  # the repeat was never run


def test_rescue_moves_are_not_repeated_when_nothing_trains(tmp_path):
    """The expert's rescue moves while nothing has trained yet: each once, then it stops."""
    execute = FakeExecutor([failed()] * 20)
    brain = ExpertBrain()
    brain.architect = lambda b: PIPELINE
    loop = make_loop(tmp_path, brain, execute, iters=10, max_repairs=0)
    loop.fit()
    records = finals(loop)
    keys = [r.decision_key for r in records if r.decision_key]
    assert len(keys) == len(set(keys)) == 2
    assert len(records) == 3  # the Architect's pipeline and two distinct rescues, then the expert stopped


# ------------------------------------------------------------------ harness failures


def test_a_harness_failure_stops_the_run_without_repair_record_or_analyst(tmp_path):
    brain = ScriptedBrain([edit("a")])
    execute = FakeExecutor([0.5, failed(None, "harness_error", "the staged data could not be read"), 0.9])
    loop = make_loop(tmp_path, brain, execute)
    with pytest.raises(HarnessError, match="the staged data could not be read"):
        loop.fit()
    assert len(execute.calls) == 2 and brain.calls["repair"] == 0
    assert brain.calls["analyst"] == 1  # the one decision that led to the failed run, none after it
    assert [r.iteration for r in finals(loop)] == [1]


def test_an_unwritable_workspace_is_a_harness_failure(tmp_path):
    def execute(iter_dir, time_limit):
        raise PermissionError(13, "Permission denied", str(iter_dir / "spec.json"))

    brain = ScriptedBrain()
    loop = make_loop(tmp_path, brain, execute)
    with pytest.raises(HarnessError, match="Permission denied"):
        loop.fit()
    assert brain.calls["analyst"] == 0 and finals(loop) == []


# ------------------------------------------------------------------ budget and resume


def test_the_time_budget_shortens_the_last_iterations_then_stops_the_run(tmp_path):
    execute = FakeExecutor([0.5, 0.6, 0.7, 0.8, 0.9], delay=0.25)
    loop = make_loop(
        tmp_path,
        ScriptedBrain([edit(x) for x in "abcd"]),
        execute,
        iters=10,
        time_per_iter=10.0,
        time_budget=15.0 + 5.6,
    )
    loop.fit()
    # Each iteration gets what is left after the 15 s overhead guess, until less than 5 s would be left.
    limits = [limit for _, limit in execute.calls]
    assert limits == pytest.approx([5.6, 5.35, 5.1], abs=0.1)
    assert len(finals(loop)) == 3


def test_resume_after_a_record_continues_from_the_journal(tmp_path):
    first = make_loop(tmp_path, ScriptedBrain([edit("a")]), FakeExecutor([0.5, 0.6]), iters=2)
    first.fit()
    # A kill after iteration 3 started: its folder is there, its record is not.
    first.run.fresh_iter_dir(3)
    (first.run.iter_dir(3) / "data.py").write_text("half written")
    assert first.run.remove_incomplete() == [3]
    brain = ScriptedBrain([edit("b")])
    second = make_loop(tmp_path, brain, FakeExecutor([0.7]), iters=3)
    out = second.fit()
    assert [r.iteration for r in finals(second)] == [1, 2, 3] and out["best"]["iteration"] == 3
    assert finals(second)[2].parent == 2 and brain.calls["architect"] == 0
