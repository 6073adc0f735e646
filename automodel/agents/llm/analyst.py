"""The Performance Analyst: one instruction for one engineer, as JSON in plain text;
or, for a round of the budget search, K distinct instructions as a JSON list in one reply.

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
from automodel.agents.llm.decision import ReplyFormatError, Round, parse_decision, parse_round
from automodel.core import Brief, Decision
from automodel.errors import BrainError

log = logging.getLogger("automodel.llm")


def prompt_view(history: dict[str, Any]) -> dict[str, Any]:
    """The history as the model reads it: tried changes named by their "change", without the loop's own
    identity key (the whole instruction again, which is noise to read)."""
    view = dict(history)
    for field in ("tried_on_best", "rejected_on_earlier_best"):
        view[field] = [{k: v for k, v in t.items() if k != "key"} for t in history.get(field) or []]
    return view


def analyst_messages(
    history: dict[str, Any], brief: Brief | None, config: LLMConfig, count: int = 1
) -> list[dict[str, str]]:
    context = prompts.brief_context(brief, config.profile_chars)
    return prompts.messages(
        "analyst.system.j2", "analyst.user.j2",
        history=prompts.bounded_json(prompt_view(history), config.history_chars), count=count, **context,
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


def decide_round(
    chat: ChatClient, config: LLMConfig, history: dict[str, Any], brief: Brief | None, count: int, tried: set[str]
) -> list[Decision]:
    """`count` distinct decisions in one reply (a round of the budget search).

    Items that are malformed, repeat each other or repeat a tried change are sent back once, like
    malformed JSON, asking for the whole list again; after that the usable items are the round."""
    messages = analyst_messages(history, brief, config, count)
    reply = chat.complete("analyst", messages)
    best: Round | None = None
    error = ""
    for attempt in range(config.json_retries + 1):
        try:
            got = parse_round(reply.text, count, tried)
            if best is None or len(got.decisions) > len(best.decisions):
                best = got
            if not got.problems:
                return got.decisions
            error = "; ".join(got.problems)
        except ReplyFormatError as err:
            error = str(err)
        if attempt == config.json_retries:
            break
        log.warning("LLM analyst round reply not fully usable (%s); asking again", error)
        messages = messages + [
            {"role": "assistant", "content": reply.text},
            {"role": "user", "content": prompts.render("retry_round.j2", error=error, count=count)},
        ]
        reply = chat.complete("analyst", messages)
    if best is not None:
        log.warning("LLM analyst round: %d of %d changes usable (%s)", len(best.decisions), count, error)
        return best.decisions
    raise BrainError(
        f"The Performance Analyst (LLM) gave no usable list of changes in {config.json_retries + 1} replies "
        f"(last problem: {error}). The replies are saved with the iteration (llm/*analyst.reply.md). "
        "The round is recorded as failed; a model that follows instructions more closely avoids this."
    )
