"""The built-in expert: a deterministic brain that needs no network."""

from __future__ import annotations

from typing import Any

from automodel.agents.base import Brief, CallRecord, Decision, Pipeline
from automodel.agents.expert import analyst, engineers, summarizer
from automodel.agents.expert.architect import write_pipeline


class ExpertBrain:
    name = "expert"

    def architect(self, brief: Brief) -> Pipeline:
        return write_pipeline(brief)

    def analyst(self, history: dict[str, Any]) -> Decision:
        return analyst.decide(history)

    def engineer(self, module: str, pipeline: Pipeline, decision: Decision | None, error: str | None = None) -> str:
        if error is not None:
            return engineers.repair(module, pipeline, error)
        return engineers.apply_edit(module, pipeline, decision)

    def summarize(self, pipeline: Pipeline, result: dict[str, Any]) -> dict[str, Any]:
        return summarizer.summarize(pipeline, result)

    def take_calls(self) -> list[CallRecord]:
        return []
