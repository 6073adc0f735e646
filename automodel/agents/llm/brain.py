"""The LLM brain: every role played by a model behind the official openai client.

    brain = make_llm_brain(model="gpt-4o-mini")                       # OpenAI (OPENAI_API_KEY)
    brain = make_llm_brain(base_url="http://localhost:8000/v1", model="qwen2.5-coder")  # local server

The loop talks to it only through the Brain protocol (automodel.agents.base);
after each role call it takes the call records (`take_calls`) and saves them
with the iteration (automodel.search.calls).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from automodel.agents.final_size import final_epochs
from automodel.agents.llm import prompts
from automodel.agents.llm.analyst import decide, decide_round
from automodel.agents.llm.architect import write_pipeline, write_pipeline_sequential
from automodel.agents.llm.client import ChatClient
from automodel.agents.llm.config import LLMConfig, resolve_config
from automodel.agents.llm.engineer import rewrite_module
from automodel.agents.llm.summarizer import Summarizer
from automodel.core import Brief, CallRecord, Decision, History, Pipeline, Usage
from automodel.errors import BrainError

# The final run is resized only when it would make this many times the passes it needs (final_epochs):
# below that, a wider network buys little and the unchecked rewrite is not worth its risk.
RESIZE_ABOVE = 1.5


class LLMBrain:
    def __init__(self, config: LLMConfig, brief: Brief | None = None):
        self.config = config
        self.name = f"llm:{config.model}"
        self.chat = ChatClient(config)
        # The Architect's brief also informs the engineers and the Analyst; on
        # resume `start(brief)` gives it again before any role runs.
        self.brief = brief
        self._summarizer = Summarizer(self.chat, config)
        self._taken: list[CallRecord] = []

    # ---- Brain protocol
    def start(self, brief: Brief) -> None:
        self.brief = brief

    def architect(self, brief: Brief) -> Pipeline:
        self.brief = brief
        if self.config.init == "sequential":
            return write_pipeline_sequential(self.chat, self.config, brief)
        return write_pipeline(self.chat, self.config, brief)

    def analyst(self, history: History) -> Decision:
        return decide(self.chat, self.config, history.to_json(), self.brief)

    def analyst_round(self, history: History, count: int) -> list[Decision] | None:
        # One reply for the whole round: the model sees its K changes side by side and makes them distinct.
        return decide_round(self.chat, self.config, history.to_json(), self.brief, count, history.tried_keys())

    def engineer(self, module: str, pipeline: Pipeline, decision: Decision | None, error: str | None = None) -> str:
        return rewrite_module(self.chat, self.config, module, pipeline, decision, error, self.brief)

    def summarize(self, pipeline: Pipeline, result: dict[str, Any]) -> dict[str, Any]:
        return self._summarizer.summarize(pipeline, result)

    def scale(self, pipeline: Pipeline, seconds: float, num_train: int,
              images_per_second: float | None = None) -> tuple[Pipeline, str] | None:
        # Candidates were screened in short runs, so the network was sized for them: the Model Engineer is
        # asked once to widen it for the long final run, as the expert does by rule (expert/scaling.py). Only
        # when the run would make far more passes than it needs; the new module has not run yet, so
        # search/final.py refits the pipeline as it was when the resized one fails.
        if not images_per_second or num_train <= 0:
            return None
        epochs, aim = images_per_second * seconds / num_train, final_epochs(num_train)
        if epochs < RESIZE_ABOVE * aim:
            return None
        instruction = prompts.render("refit_resize.j2", seconds=round(seconds), num_train=num_train,
                                     images_per_second=round(images_per_second), epochs=round(epochs), aim=aim)
        decision = Decision("model", instruction.strip(), f"final model: ~{epochs:.0f} passes at the screening "
                            f"speed, ~{aim} needed")
        try:
            source = self.engineer("model", pipeline, decision)
        except BrainError:
            return None  # no usable reply: the pipeline as it ran is a sound final model
        if source.strip() == pipeline.model.strip():
            return None
        return pipeline.with_module("model", source), (
            f"the Model Engineer resized model.py: unchanged it would make ~{epochs:.0f} passes over the "
            f"{num_train} images in {seconds:.0f} s, ~{aim} are enough")

    def take_calls(self) -> list[CallRecord]:
        calls, self.chat.calls = self.chat.calls, []
        self._taken.extend(calls)
        return list(calls)

    # ---- extras for the CLI and reports
    def usage(self) -> Usage:
        """Tokens and cost of every call this brain made (taken or not)."""
        return Usage.of(self._taken + self.chat.calls)

    def close(self) -> None:
        self.chat.close()


def make_llm_brain(
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    *,
    timeout: float | None = None,
    cache_dir: str | Path | None = None,
    init: str = "single",
    env: dict[str, str] | None = None,
    **settings: Any,
) -> LLMBrain:
    """An LLMBrain from arguments and the environment.

    Raises LLMConfigError with the fix when neither a key nor a server is
    configured. `settings` are further LLMConfig fields (max_attempts,
    temperature, max_tokens, history_chars, ...).
    """
    config = resolve_config(
        model, base_url, api_key, env=env, cache_dir=cache_dir, init=init, timeout=timeout, **settings
    )
    return LLMBrain(config)
