"""The boundary between the loop and a brain: the roles a brain plays.

A brain (the built-in expert, or the LLM) implements `Brain`; the loop only
talks to this protocol, so both brains play the same roles. The types it
passes (Brief, Pipeline, Decision, CallRecord) are in automodel.core.
"""

from __future__ import annotations

from typing import Any, Protocol

from automodel.core import Brief, CallRecord, Decision, History, Pipeline
from automodel.errors import AutomodelError


class BrainExhausted(AutomodelError):
    """The brain has nothing new to propose (every move it knows was tried): the run stops early."""


class Brain(Protocol):
    name: str  # "expert" or "llm:<model>"

    def start(self, brief: Brief) -> None:
        """Learn the task before any role is played (also on resume, when the Architect does not run)."""

    def architect(self, brief: Brief) -> Pipeline:
        """Write one complete pipeline for the dataset (iteration 1)."""

    def analyst(self, history: History) -> Decision:
        """Pick one instruction for one engineer from a bounded history summary."""

    def analyst_round(self, history: History, count: int) -> list[Decision] | None:
        """`count` distinct decisions for one round of the budget search, in one go (the LLM: one reply
        holding a list); None when the brain proposes one at a time, through `analyst` per candidate."""

    def engineer(self, module: str, pipeline: Pipeline, decision: Decision, error: str | None = None) -> str:
        """Return the new source of `module`; `error` is set when repairing a failed attempt."""

    def summarize(self, pipeline: Pipeline, result: dict[str, Any]) -> dict[str, Any]:
        """Short structured summary of a pipeline's methods and hyperparameters and its result."""

    def scale(self, pipeline: Pipeline, seconds: float, num_train: int,
              images_per_second: float | None = None) -> tuple[Pipeline, str] | None:
        """The pipeline resized for a longer final run (`seconds` of training on `num_train` images) and a
        note saying what changed, or None to refit it as it is. `images_per_second` is what the pipeline
        trained at in exploration (None when unknown)."""

    def take_calls(self) -> list[CallRecord]:
        """LLM calls made since the last take (prompts, replies, tokens); [] for the expert."""
