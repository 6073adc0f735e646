"""What the fast loop tests share: a scripted brain and a fake executor, no subprocess.

The fake executor writes the files a real iteration leaves (metrics.json,
probs_val.npy, probs_test.npy, model.pt) from a scripted outcome, so the loop's
rules, records, best/ and final/ are exercised exactly as in a real run.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np

from automodel.agents.base import BrainExhausted
from automodel.core import Brief, Decision, ErrorInfo, Hardware, IterationResult, Pipeline, SandboxInfo
from automodel.search.loop import FitConfig, Loop
from automodel.search.pool import make_slots
from automodel.search.progress import Progress
from automodel.search.workspace import RunDir

NUM_VAL = 40
LABELS = np.arange(NUM_VAL) % 4

PIPELINE = Pipeline(data="CROP_PADDING = 0\n", model="WIDTH = 32\n", train="LR = 0.1\nBATCH_SIZE = 64\n")


def probs_with_accuracy(acc: float) -> np.ndarray:
    """Validation probabilities that get the first round(acc * N) images right."""
    k = int(round(acc * NUM_VAL))
    pred = LABELS.copy()
    pred[k:] = (LABELS[k:] + 1) % 4
    return np.eye(4, dtype=np.float32)[pred]


def failed(module: str = "train", status: str = "failed", message: str = "boom") -> IterationResult:
    return IterationResult(status=status, val_accuracy=None, test_accuracy=None, curves={}, timings={},
                           error=ErrorInfo("train", module, "RuntimeError", message), sandbox=SandboxInfo("none", ()))


class FakeExecutor:
    """Plays scripted outcomes: a float is an ok run with that validation accuracy, a dict one with
    {"val", and optionally "probs" (validation probabilities), "train" (accuracy on a training sample; default
    val + 0.01), "compute" (metrics.json compute)}, an
    IterationResult is returned as it is; each call may also sleep `delay` s. A refit gets validation
    probabilities too (as a real one would: the images are predicted, their score is not used).

    `outcomes` may also be a dict {iteration: outcome} (runs at once end in any order), and `delay` a dict
    {iteration: seconds}. Each call's slot and (start, end) times are kept in `slots` and `spans`."""

    def __init__(self, outcomes: list | dict, delay: float | dict = 0.0):
        self.outcomes = dict(outcomes) if isinstance(outcomes, dict) else list(outcomes)
        self.calls: list[tuple[Path, float]] = []
        self.refits: list[bool] = []
        self.slots: dict[int, object] = {}
        self.spans: dict[int, tuple[float, float]] = {}
        self.delay = delay

    def __call__(self, iter_dir: Path, time_limit: float, refit: bool = False, slot=None) -> IterationResult:
        n = int(Path(iter_dir).name[5:])
        self.calls.append((iter_dir, time_limit))
        self.refits.append(refit)
        self.slots[n] = slot
        started = time.monotonic()
        time.sleep(self.delay.get(n, 0.0) if isinstance(self.delay, dict) else self.delay)
        self.spans[n] = (started, time.monotonic())
        outcome = self.outcomes.pop(n) if isinstance(self.outcomes, dict) else self.outcomes.pop(0)
        if isinstance(outcome, IterationResult):
            result = outcome
        else:
            spec = outcome if isinstance(outcome, dict) else {"val": outcome}
            val = spec["val"]
            probs = spec.get("probs")
            np.save(iter_dir / "probs_val.npy", probs if probs is not None else probs_with_accuracy(val))
            np.save(iter_dir / "probs_test.npy", probs if probs is not None else probs_with_accuracy(val - 0.025))
            result = IterationResult(status="ok", val_accuracy=val, test_accuracy=val - 0.01, error=None,
                                     curves={}, timings={"training": time_limit}, sandbox=SandboxInfo("none", ()),
                                     train_eval_accuracy=spec.get("train", val + 0.01),
                                     compute=spec.get("compute") or {})
            (iter_dir / "model.pt").write_bytes(b"weights %f" % val)
        (iter_dir / "metrics.json").write_text(json.dumps(result.to_json()))
        return result


class ScriptedBrain:
    """Returns scripted decisions (an exception in the list is raised); counts calls per role."""

    name = "scripted"

    def __init__(self, decisions: list | None = None, repairs: list | None = None):
        self.decisions = list(decisions or [])
        self.repairs = list(repairs or [])
        self.calls = {"architect": 0, "analyst": 0, "engineer": 0, "repair": 0, "summarize": 0}

    def start(self, brief):
        pass

    def architect(self, brief):
        self.calls["architect"] += 1
        return PIPELINE

    def analyst(self, history):
        self.calls["analyst"] += 1
        if not self.decisions:
            raise BrainExhausted("the scripted brain has no decision left")
        item = self.decisions.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def analyst_round(self, history, count):
        return None

    def engineer(self, module, pipeline, decision, error=None):
        self.calls["repair" if error else "engineer"] += 1
        if error and self.repairs:
            item = self.repairs.pop(0)
            if isinstance(item, Exception):
                raise item
        return pipeline.module(module) + f"# edit {sum(self.calls.values())}\n"

    def summarize(self, pipeline, result):
        self.calls["summarize"] += 1
        return {"methods": "scripted"}

    def scale(self, pipeline, seconds, num_train, images_per_second=None):
        return None

    def take_calls(self):
        return []


def edit(name: str, target: str = "train") -> Decision:
    return Decision(target, f"change {name}", "scripted")


def brief() -> Brief:
    return Brief(profile={}, info={"num_classes": 4, "image_size": [8, 8], "channels": 1}, description="",
                 hardware=Hardware(cpu_cores=2, device="cpu"), time_per_iter=5.0)


def make_loop(tmp_path: Path, brain, execute, started: float | None = None, **cfg) -> Loop:
    path = tmp_path / "ws" / "run"
    run = (
        RunDir.open(path)
        if path.exists()
        else RunDir.create(tmp_path / "ws", "run", {"split": {"val": list(range(NUM_VAL))}})
    )
    facts = {"num_classes": 4, "num_train": 100, "image_size": [8, 8], "channels": 1, "description": ""}
    config = FitConfig(**{"iters": 4, "time_per_iter": 5.0, "search": "greedy", **cfg})
    slots = make_slots(config.parallel, cores=config.parallel) if config.parallel > 1 else None
    return Loop(run, brain, execute, config, brief(), facts, Progress(stream=io.StringIO()), val_labels=LABELS,
                test_labels=LABELS, started=started, slots=slots)


def finals(loop: Loop):
    return loop.run.iterations()
