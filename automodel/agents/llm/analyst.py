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
from typing import Any, Callable, TypeVar

from automodel.agents.llm import prompts
from automodel.agents.llm.client import ChatClient
from automodel.agents.llm.config import LLMConfig
from automodel.agents.llm.decision import ReplyFormatError, parse_decision, parse_round
from automodel.core import Brief, Decision
from automodel.errors import BrainError

log = logging.getLogger("automodel.llm")
T = TypeVar("T")


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


def _ask(
    chat: ChatClient, messages: list[dict[str, str]], retries: int,
    parse: Callable[[str], tuple[T | None, str, int]], retry: Callable[[str], str],
) -> tuple[T | None, str, int]:
    """Ask the Analyst; a reply whose parse names a problem is sent back with it (`retry(problem)` is the
    follow-up message), up to `retries` times. `parse(text)` gives (value or None, problem or "", size).
    Returns the value of the largest size seen, the last problem, and the number of replies."""
    best: tuple[T | None, int] = (None, -1)
    problem, replies = "", 0
    while True:
        reply = chat.complete("analyst", messages)
        replies += 1
        value, problem, size = parse(reply.text)
        if value is not None and not problem:
            return value, "", replies
        if value is not None and size > best[1]:
            best = (value, size)
        if replies > retries:
            return best[0], problem, replies
        log.warning("LLM analyst reply not fully usable (%s); asking again", problem)
        messages = [*messages, {"role": "assistant", "content": reply.text},
                    {"role": "user", "content": retry(problem)}]


def decide(chat: ChatClient, config: LLMConfig, history: dict[str, Any], brief: Brief | None) -> Decision:
    def parse(text: str) -> tuple[Decision | None, str, int]:
        try:
            return parse_decision(text), "", 1
        except ReplyFormatError as err:
            return None, str(err), 0

    decision, problem, replies = _ask(chat, analyst_messages(history, brief, config), config.json_retries, parse,
                                      lambda error: prompts.render("retry_json.j2", error=error))
    if decision is not None:
        return decision
    raise BrainError(
        f"The Performance Analyst (LLM) gave no usable decision in {replies} replies "
        f"(last problem: {problem}). The replies are saved with the iteration (llm/*analyst.reply.md). "
        "The iteration is recorded as failed; a model that follows instructions more closely avoids this."
    )


def decide_round(
    chat: ChatClient, config: LLMConfig, history: dict[str, Any], brief: Brief | None, count: int, tried: set[str]
) -> list[Decision]:
    """`count` distinct decisions in one reply (a round of the budget search).

    Items that are malformed, repeat each other or repeat a tried change are sent back once, like
    malformed JSON, asking for the whole list again; after that the usable items are the round."""
    def parse(text: str) -> tuple[list[Decision] | None, str, int]:
        try:
            got = parse_round(text, count, tried)
        except ReplyFormatError as err:
            return None, str(err), 0
        return got.decisions, "; ".join(got.problems), len(got.decisions)

    decisions, problem, replies = _ask(chat, analyst_messages(history, brief, config, count), config.json_retries,
                                       parse, lambda error: prompts.render("retry_round.j2", error=error, count=count))
    if decisions is not None:
        if problem:
            log.warning("LLM analyst round: %d of %d changes usable (%s)", len(decisions), count, problem)
        return decisions
    raise BrainError(
        f"The Performance Analyst (LLM) gave no usable list of changes in {replies} replies "
        f"(last problem: {problem}). The replies are saved with the iteration (llm/*analyst.reply.md). "
        "The round is recorded as failed; a model that follows instructions more closely avoids this."
    )
