"""Every registered brain plays every role with well-typed results on the same small brief.

The LLM brain talks to the replay server over HTTP through the real openai
client; the expert needs nothing. A brain added to the registry is tested here
without any change to this file.
"""

from __future__ import annotations

import ast
from contextlib import contextmanager
from pathlib import Path

import pytest

from automodel.agents.registry import AGENT_CHOICES, BRAINS, BrainConfig, make_brain, resolve
from automodel.core import MODULES, Brief, Decision, Hardware, History, Pipeline
from automodel.sandbox.contracts import check_source
from automodel.testing.replay_server import ReplayServer

SCRIPTS = Path(__file__).parent / "llm_scripts"
DECISION = '{"target": "model", "instruction": "Widen the network: WIDTH 24 -> 32.", "reason": "under-fitting"}'
SUMMARY = '{"data": "random crops", "model": "a small residual CNN", "train": "AdamW, cosine schedule"}'


def brief() -> Brief:
    profile = {"num_classes": 10, "class_names": [str(i) for i in range(10)], "num_images": 600,
               "splits": {"train": 400, "val": 100, "test": 100}, "channels": 1,
               "image_size": {"min": [28, 28], "median": [28, 28], "max": [28, 28]}}
    info = {"num_classes": 10, "class_names": [str(i) for i in range(10)], "channels": 1, "image_size": [28, 28],
            "mean": [0.13], "std": [0.3], "num_train": 400, "device": "cpu", "pretrained_available": False}
    return Brief(profile=profile, info=info, description="handwritten digits", time_per_iter=10.0,
                 hardware=Hardware(cpu_cores=2, device="cpu", memory_gb=8.0))


def history(pipeline: Pipeline) -> History:
    from automodel.hparams import read_hparams

    summary = {m: {"hparams": read_hparams(pipeline.module(m))} for m in MODULES}
    return History.from_json({
        "dataset": {"num_classes": 10, "channels": 1, "image_size": [28, 28]},
        "best": {"iteration": 1, "val_accuracy": 0.80, "train_accuracy": 0.81, "summary": summary, "train_steps": 300,
                 "curves": {}},
        "parent_iteration": 1, "tried_on_best": [], "chance_accuracy": 0.1, "num_iterations": 1,
    })


@contextmanager
def brain_named(name: str):
    if name == "expert":
        yield make_brain(BrainConfig(agent="expert"))
        return
    script = {"roles": {"architect": [{"reply_file": "good_pipeline.md"}], "analyst": [{"reply": DECISION}],
                        "model_engineer": [{"reply_file": "model_wider.md"}], "summarizer": [{"reply": SUMMARY}]}}
    from automodel.testing.replay_server import load_script

    with ReplayServer(load_script(script, base=SCRIPTS)) as server:
        yield make_brain(BrainConfig(agent=name, base_url=server.base_url, model="gpt-4o-mini"))


def test_agent_choices_come_from_the_registry():
    assert AGENT_CHOICES == ("auto", *BRAINS)
    assert resolve(BrainConfig(agent="expert")) == "expert"


@pytest.mark.parametrize("name", sorted(BRAINS))
def test_every_brain_plays_every_role(name, monkeypatch):
    for key in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    with brain_named(name) as brain:
        brain.start(brief())
        pipeline = brain.architect(brief())
        assert isinstance(pipeline, Pipeline)
        for module in MODULES:
            source = pipeline.module(module)
            assert check_source(module, source) == [], (module, check_source(module, source))
        decision = brain.analyst(history(pipeline))
        assert isinstance(decision, Decision) and decision.target in MODULES
        assert decision.instruction and decision.reason
        new_source = brain.engineer(decision.target, pipeline, decision)
        assert isinstance(new_source, str) and new_source != pipeline.module(decision.target)
        assert check_source(decision.target, new_source) == []
        ast.parse(new_source)
        summary = brain.summarize(pipeline, {"status": "ok", "val_accuracy": 0.8, "train_accuracy": 0.81})
        assert set(MODULES) <= set(summary) and all(isinstance(summary[m]["hparams"], dict) for m in MODULES)
        assert summary["result"]["val_accuracy"] == 0.8 and "test_accuracy" not in summary["result"]
        calls = brain.take_calls()
        assert all(c.prompt and c.reply for c in calls)
        assert (len(calls) > 0) == (name == "llm")  # only an LLM makes calls to record
