"""The Performance Analyst: one instruction for one engineer, as JSON in plain text.

The history comes from the loop already bounded (automodel.search.history); the
prompt is bounded again here with a hard character cap, so the Analyst's
context cannot grow with the number of iterations whatever the caller passes.
A reply that is not a usable decision is sent back once with the parse error;
if the second reply fails too, BrainError tells the loop to record the failure.
"""

from __future__ import annotations

import logging
from typing import Any

from automodel.agents.llm import prompts
from automodel.agents.llm.client import ChatClient
from automodel.agents.llm.config import LLMConfig
from automodel.agents.llm.decision import ReplyFormatError, parse_decision
from automodel.core import Brief, Decision
from automodel.errors import BrainError

log = logging.getLogger("automodel.llm")


def analyst_messages(history: dict[str, Any], brief: Brief | None, config: LLMConfig) -> list[dict[str, str]]:
    context = prompts.brief_context(brief, config.profile_chars)
    return prompts.messages(
        "analyst.system.j2", "analyst.user.j2",
        history=prompts.bounded_json(history, config.history_chars), **context,
    )


def decide(chat: ChatClient, config: LLMConfig, history: dict[str, Any], brief: Brief | None) -> Decision:
    messages = analyst_messages(history, brief, config)
    reply = chat.complete("analyst", messages)
    errors = []
    for attempt in range(config.json_retries + 1):
        try:
            return parse_decision(reply.text)
        except ReplyFormatError as err:
            errors.append(str(err))
            if attempt == config.json_retries:
                break
            log.warning("LLM analyst reply unusable (%s); asking again", err)
            messages = messages + [
                {"role": "assistant", "content": reply.text},
                {"role": "user", "content": prompts.render("retry_json.j2", error=str(err))},
            ]
            reply = chat.complete("analyst", messages)
    raise BrainError(
        f"The Performance Analyst (LLM) gave no usable decision in {len(errors)} replies "
        f"(last problem: {errors[-1]}). The replies are saved with the iteration (llm/*analyst.reply.md). "
        "The iteration is recorded as failed; a model that follows instructions more closely avoids this."
    )
