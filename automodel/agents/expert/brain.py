"""The built-in expert: a deterministic brain that needs no network."""

from __future__ import annotations

from typing import Any

from automodel.agents.expert import analyst, engineers, summarizer
from automodel.agents.expert.architect import plan, write_pipeline
from automodel.agents.expert.scaling import scale_for
from automodel.core import Brief, CallRecord, Decision, History, Pipeline


class ExpertBrain:
    name = "expert"

    def __init__(self):
        self.flips_allowed = False  # until start(): no move that could change a label
        self.facts = None

    def start(self, brief: Brief) -> None:
        """Judge the task once, as the Architect does: whether flips could change a label."""
        self.facts, _ = plan(brief)
        self.flips_allowed = self.facts.flips_allowed

    def architect(self, brief: Brief) -> Pipeline:
        return write_pipeline(brief)

    def analyst(self, history: History) -> Decision:
        return analyst.decide(history, self.flips_allowed)

    def analyst_round(self, history: History, count: int) -> list[Decision] | None:
        return None  # its moves are picked one at a time, each seeing the round's earlier ones as tried

    def engineer(self, module: str, pipeline: Pipeline, decision: Decision | None, error: str | None = None) -> str:
        if error is not None:
            return engineers.repair(module, pipeline, error)
        return engineers.apply_edit(module, pipeline, decision)

    def summarize(self, pipeline: Pipeline, result: dict[str, Any]) -> dict[str, Any]:
        return summarizer.summarize(pipeline, result)

    def scale(self, pipeline: Pipeline, seconds: float, num_train: int,
              images_per_second: float | None = None) -> tuple[Pipeline, str] | None:
        # The expert sizes from its own throughput probe (the same rule as its Architect), not from one run.
        return scale_for(pipeline, self.facts, seconds, num_train) if self.facts is not None else None

    def take_calls(self) -> list[CallRecord]:
        return []
