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

from automodel.agents.llm.analyst import decide, decide_round
from automodel.agents.llm.architect import write_pipeline, write_pipeline_sequential
from automodel.agents.llm.client import ChatClient
from automodel.agents.llm.config import LLMConfig, resolve_config
from automodel.agents.llm.engineer import rewrite_module
from automodel.agents.llm.summarizer import Summarizer
from automodel.core import Brief, CallRecord, Decision, History, Pipeline, Usage


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

    def scale(self, pipeline: Pipeline, seconds: float, num_train: int) -> tuple[Pipeline, str] | None:
        # The LLM's pipelines follow no fixed hyperparameter block, so a change made without a run to check it
        # could break the final model: refit the chosen pipeline as it is.
        return None

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
