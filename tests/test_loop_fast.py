"""The loop, driven in milliseconds: a scripted brain and a fake executor, no subprocess.

The fake executor writes the files a real iteration leaves (metrics.json,
probs_val.npy) from a scripted outcome, so the loop's keep/discard rule,
records, best/, repairs and stops are exercised exactly as in a real run.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from automodel.agents.base import Brief, Decision, Hardware, Pipeline
from automodel.agents.expert.brain import ExpertBrain
from automodel.errors import HarnessError
from automodel.search.loop import FitConfig, Loop
from automodel.search.progress import Progress
from automodel.search.workspace import RunDir

NUM_VAL = 40
LABELS = np.arange(NUM_VAL) % 4

PIPELINE = Pipeline(data="WIDTH_UNUSED = 1\n", model="WIDTH = 32\n", train="LR = 0.1\nBATCH_SIZE = 64\n")


def probs_with_accuracy(acc: float) -> np.ndarray:
    """Validation probabilities that get the first round(acc * N) images right."""
    k = int(round(acc * NUM_VAL))
    pred = LABELS.copy()
    pred[k:] = (LABELS[k:] + 1) % 4
    return np.eye(4, dtype=np.float32)[pred]


class FakeExecutor:
    """Plays scripted outcomes: a float is an ok run with that validation accuracy,
    a dict is a result as the runner returns it (failed, harness_error, ...)."""

    def __init__(self, outcomes: list):
        self.outcomes = list(outcomes)
        self.calls: list[Path] = []

    def __call__(self, iter_dir: Path, time_limit: float) -> dict:
        self.calls.append(iter_dir)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, dict):
            result = {"curves": {}, "timings": {}, **outcome}
        else:
            np.save(iter_dir / "probs_val.npy", probs_with_accuracy(outcome))
            result = {"status": "ok", "val_accuracy": outcome, "test_accuracy": outcome - 0.01, "error": None,
                      "curves": {}, "timings": {"training": time_limit}, "train_eval_accuracy": outcome + 0.01}
        (iter_dir / "metrics.json").write_text(json.dumps(result))
        (iter_dir / "model.pt").write_bytes(b"weights")
        return result


class ScriptedBrain:
    """Returns scripted decisions; counts every call per role."""

    name = "scripted"

    def __init__(self, decisions: list[Decision] | None = None):
        self.decisions = list(decisions or [])
        self.calls = {"architect": 0, "analyst": 0, "engineer": 0, "repair": 0, "summarize": 0}

    def architect(self, brief):
        self.calls["architect"] += 1
        return PIPELINE

    def analyst(self, history):
        self.calls["analyst"] += 1
        return self.decisions.pop(0)

    def engineer(self, module, pipeline, decision, error=None):
        self.calls["repair" if error else "engineer"] += 1
        return pipeline.module(module) + f"# edit {sum(self.calls.values())}\n"

    def summarize(self, pipeline, result):
        self.calls["summarize"] += 1
        return {"methods": "scripted"}

    def take_calls(self):
        return []


def brief() -> Brief:
    return Brief(profile={}, info={"num_classes": 4, "image_size": [8, 8], "channels": 1}, description="",
                 hardware=Hardware(cpu_cores=2, device="cpu"), time_per_iter=5.0)


def make_loop(tmp_path: Path, brain, execute, **cfg) -> Loop:
    run = RunDir.create(tmp_path / "ws", "run", {"split": {"val": list(range(NUM_VAL))}})
    facts = {"num_classes": 4, "num_train": 100, "image_size": [8, 8], "channels": 1, "description": ""}
    config = FitConfig(**{"iters": 4, "time_per_iter": 5.0, **cfg})
    return Loop(run, brain, execute, config, brief(), facts, Progress(stream=io.StringIO()), val_labels=LABELS)


def finals(loop: Loop) -> list[dict]:
    return loop.run.iterations()


def test_a_harness_failure_stops_the_run_without_repair_record_or_analyst(tmp_path):
    brain = ScriptedBrain([Decision("train", "raise the learning rate", "test")])
    harness = {"status": "harness_error", "error": {"phase": "sandbox", "module": None, "type": "HarnessError",
                                                    "message": "the staged data could not be read", "traceback": ""}}
    execute = FakeExecutor([0.5, harness, 0.9])
    loop = make_loop(tmp_path, brain, execute)
    with pytest.raises(HarnessError, match="the staged data could not be read"):
        loop.fit()
    assert len(execute.calls) == 2 and brain.calls["repair"] == 0
    assert brain.calls["analyst"] == 1  # the one decision that led to the failed run, none after it
    assert [r["iteration"] for r in finals(loop)] == [1]


def test_an_unwritable_workspace_is_a_harness_failure(tmp_path):
    def execute(iter_dir, time_limit):
        raise PermissionError(13, "Permission denied", str(iter_dir / "spec.json"))

    brain = ScriptedBrain()
    loop = make_loop(tmp_path, brain, execute)
    with pytest.raises(HarnessError, match="Permission denied"):
        loop.fit()
    assert brain.calls["analyst"] == 0 and finals(loop) == []


def test_a_decision_is_never_run_twice_on_the_same_parent(tmp_path):
    same = Decision("train", "raise the learning rate", "test")
    brain = ScriptedBrain([same, same, Decision("model", "wider", "test")])
    execute = FakeExecutor([0.5, 0.45, 0.6])
    loop = make_loop(tmp_path, brain, execute)
    loop.fit()
    records = finals(loop)
    assert [r["status"] for r in records] == ["ok", "ok", "brain_error", "ok"]
    assert "repeated a decision already tried on iteration 1" in records[2]["error"]["message"]
    assert len(execute.calls) == 3  # the repeat was never run


def test_rescue_moves_are_not_repeated_when_nothing_trains(tmp_path):
    """The expert's rescue moves while nothing has trained yet: each once, then it stops."""
    failed = {"status": "failed", "error": {"phase": "train", "module": "train", "type": "RuntimeError",
                                            "message": "boom", "traceback": ""}}
    execute = FakeExecutor([failed] * 20)
    loop = make_loop(tmp_path, ExpertBrain(), execute, iters=10, max_repairs=0)
    # The expert's rescue moves edit the constants of real expert modules.
    loop.brain.architect = lambda b: Pipeline(data="CROP_PADDING = 0\n", model="WIDTH = 32\n",
                                             train="LR = 0.1\nBATCH_SIZE = 64\n")
    loop.fit()
    records = finals(loop)
    keys = [r["decision_key"] for r in records if r.get("decision_key")]
    assert len(keys) == len(set(keys)) == 2
    assert len(records) == 3  # the Architect's pipeline and two distinct rescues, then the expert stopped
