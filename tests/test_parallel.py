"""Rounds run at once (`fit --parallel K`), driven in milliseconds with tests/loopkit.py: candidates of a
round overlap in time, each in its own slot; records commit in iteration order and are judged as if the
round had run one after another; resume after a SIGKILL in the middle of a round commits what had
finished and runs only the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from loopkit import FakeExecutor, ScriptedBrain, edit, failed, finals, make_loop

from automodel.core import ErrorInfo, IterationResult, SandboxInfo
from automodel.errors import HarnessError
from automodel.search.plan import make_plan
from automodel.search.pool import make_slots
from automodel.search.workspace import PENDING_KEY, PRODUCED, RunDir, read_final

TESTS = Path(__file__).resolve().parent


def parallel_loop(tmp_path, brain, execute, **cfg):
    return make_loop(tmp_path, brain, execute, **{"search": "budget", "time_per_iter": 20.0, "parallel": 2,
                                                   "iters": 6, **cfg})


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return min(a[1], b[1]) - max(a[0], b[0])


def test_slots_split_the_cores_and_memory_and_deal_the_gpus_round_robin():
    slots = make_slots(4, cores=16, gpus=2)
    assert [s.threads for s in slots] == [4, 4, 4, 4] and [s.gpu for s in slots] == ["0", "1", "0", "1"]
    assert len({s.memory for s in slots}) == 1 and slots[0].memory is not None
    assert slots[2].label().startswith("slot 3/4 (4 threads, GPU 0) on ")
    assert [s.threads for s in make_slots(3, cores=2)] == [1, 1, 1]  # never below one thread


def test_the_plan_runs_k_candidates_per_round_and_gives_them_longer_runs_than_one_at_a_time():
    alone = make_plan(iters=20, time_per_iter=60.0, time_budget=600.0, final_share=0.6, candidates=None)
    at_once = make_plan(iters=20, time_per_iter=60.0, time_budget=600.0, final_share=0.6, candidates=None,
                        parallel=2)
    assert at_once.candidates == 2 and at_once.rungs[0] > alone.rungs[0]
    assert any("2 at once" in reason for reason in at_once.reasons)


def test_a_round_runs_at_once_in_separate_slots_and_commits_in_order(tmp_path):
    brain = ScriptedBrain([edit(x) for x in "abcd"])
    execute = FakeExecutor({1: 0.5, 2: 0.6, 3: 0.55, 4: 0.7, 5: 0.65, 6: 0.8}, delay={2: 0.4, 3: 0.4, 4: 0.4, 5: 0.4})
    loop = parallel_loop(tmp_path, brain, execute)
    out = loop.fit()
    records = finals(loop)
    assert [r.iteration for r in records] == [1, 2, 3, 4, 5, 6]
    # The two candidates of each round trained at the same time, each in its own slot.
    assert overlap(execute.spans[2], execute.spans[3]) > 0.3 and overlap(execute.spans[4], execute.spans[5]) > 0.3
    assert {execute.slots[2].index, execute.slots[3].index} == {0, 1}
    assert all(r.slot and r.slot.startswith("slot ") and "/2 (1 thread)" in r.slot for r in records[1:5])
    # The first pipeline ran in a slot too (so candidates compare with it at equal compute); the final refit
    # got the whole machine.
    assert execute.slots[1] is not None and execute.slots[6] is None and records[-1].kind == "refit"
    assert out["final"]["members"] == [4]
    assert PENDING_KEY not in loop.run.info
    assert not list(loop.run.path.glob(f"iter_*/{PRODUCED}"))


def test_a_candidate_that_ends_first_still_waits_for_the_earlier_one_and_is_judged_after_it(tmp_path):
    # Iteration 3 ends long before 2. Judged alone against iteration 1 (0.5) it would be kept; committed
    # after 2 (0.7), as in a round run one after another, it is not.
    brain = ScriptedBrain([edit(x) for x in "ab"])
    execute = FakeExecutor({1: 0.5, 2: 0.7, 3: 0.65, 4: 0.8}, delay={2: 0.6})
    loop = parallel_loop(tmp_path, brain, execute, iters=4)
    loop.fit()
    records = finals(loop)
    assert execute.spans[3][1] < execute.spans[2][1]
    assert [r.iteration for r in records] == [1, 2, 3, 4]
    assert records[1].accepted and not records[2].accepted
    lines = [json.loads(line) for line in (loop.run.path / "journal.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [1, 2, 3, 4]


def harness_error() -> IterationResult:
    return IterationResult(status="harness_error", val_accuracy=None, test_accuracy=None, curves={}, timings={},
                           error=ErrorInfo("sandbox", None, "HarnessError", "the sandbox broke"),
                           sandbox=SandboxInfo("none", ()))


class FailsOnceThreeRuns(FakeExecutor):
    """Iteration 2's harness error comes once iteration 3 has started: a run that had not yet taken its slot
    when the round was cancelled would never start (on a busy machine its thread can start late)."""

    def __call__(self, iter_dir: Path, time_limit: float, refit: bool = False, slot=None):
        deadline = time.monotonic() + 30
        while Path(iter_dir).name == "iter_002" and 3 not in self.slots and time.monotonic() < deadline:
            time.sleep(0.01)
        return super().__call__(iter_dir, time_limit, refit, slot)


def test_a_failure_of_automodels_own_side_in_one_candidate_stops_the_round_and_resume_finishes_it(tmp_path):
    brain = ScriptedBrain([edit(x) for x in "ab"])
    loop = parallel_loop(tmp_path, brain, FailsOnceThreeRuns({1: 0.5, 2: harness_error(), 3: 0.6}, delay={3: 0.3}),
                         iters=4)
    with pytest.raises(HarnessError, match="the sandbox broke"):
        loop.fit()
    assert [r.iteration for r in finals(loop)] == [1]
    assert [job["iteration"] for job in loop.run.info[PENDING_KEY]] == [2, 3]
    # Iteration 3 had finished: resume commits it as it was and runs only iteration 2 again.
    run = RunDir.open(loop.run.path)
    assert run.remove_incomplete() == [2]
    again = FakeExecutor({2: 0.55, 4: 0.9})
    resumed = parallel_loop(tmp_path, ScriptedBrain([]), again, iters=4)
    resumed.fit()
    assert sorted(again.slots) == [2, 4]
    assert [r.iteration for r in finals(resumed)] == [1, 2, 3, 4]
    assert finals(resumed)[2].val_accuracy == 0.6 and finals(resumed)[1].val_accuracy == 0.55


CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
from loopkit import FakeExecutor, ScriptedBrain, edit, make_loop

class Hanging(FakeExecutor):
    def __call__(self, iter_dir, time_limit, refit=False, slot=None):
        Path(iter_dir, "started").write_text("1")
        if Path(iter_dir).name == "iter_002":
            time.sleep(60)  # killed here, while iteration 3 has finished and waits for its turn
        return super().__call__(iter_dir, time_limit, refit, slot)

brain = ScriptedBrain([edit(x) for x in "abcd"])
loop = make_loop(Path({tmp!r}), brain, Hanging({{1: 0.5, 2: 0.6, 3: 0.7}}), iters=6, search="budget",
                 time_per_iter=20.0, parallel=2)
loop.fit()
"""


def test_resume_after_a_sigkill_in_a_round_commits_what_finished_and_runs_only_the_rest(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=str(TESTS), tmp=str(tmp_path))],
                            start_new_session=True)
    run_dir = tmp_path / "ws" / "run"
    produced = run_dir / "iter_003" / PRODUCED
    deadline = time.monotonic() + 60
    while not (produced.exists() and (run_dir / "iter_002" / "started").exists()) and time.monotonic() < deadline:
        assert proc.poll() is None, "the child ended before the round was under way"
        time.sleep(0.05)
    assert produced.exists(), "iteration 3 never finished"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = (run_dir / "journal.jsonl").read_bytes()
    assert [json.loads(x)["iteration"] for x in before.splitlines()] == [1]
    run = RunDir.open(run_dir)
    assert run.remove_incomplete() == [2] and produced.exists()
    # The round's decisions were reserved: the resumed run asks the brain only for the next round.
    brain = ScriptedBrain([edit(x) for x in "cd"])
    again = FakeExecutor({2: 0.6, 4: 0.65, 5: 0.75, 6: 0.8})
    loop = parallel_loop(tmp_path, brain, again)
    out = loop.fit()
    after = (run_dir / "journal.jsonl").read_bytes()
    assert after.startswith(before)
    assert 3 not in again.slots and sorted(again.slots) == [2, 4, 5, 6]
    records = finals(loop)
    assert [r.iteration for r in records] == [1, 2, 3, 4, 5, 6] and records[2].val_accuracy == 0.7
    assert records[1].instruction == "change a" and records[2].instruction == "change b"
    assert brain.calls["analyst"] == 2 and out["final"]["members"] == [5]
    assert read_final(run_dir) is not None and PENDING_KEY not in loop.run.info


def test_a_failed_candidate_is_repaired_in_its_slot_while_the_other_runs(tmp_path):
    brain = ScriptedBrain([edit(x) for x in "ab"])
    execute = FakeExecutor([0.5, failed(), 0.6, 0.62, 0.7], delay=0.05)
    # Outcomes in call order: 1, then 2 fails and 3 runs, then 2's repair, then the refit. The order of the
    # middle calls depends on the threads, so only their number and the records are checked.
    loop = parallel_loop(tmp_path, brain, execute, iters=4)
    loop.fit()
    records = finals(loop)
    assert [r.iteration for r in records] == [1, 2, 3, 4] and len(execute.calls) == 5
    attempts = [r for r in loop.run.journal() if not r.final]
    assert len(attempts) == 1 and attempts[0].status == "failed"
    assert sum(r.repairs for r in records) == 1
