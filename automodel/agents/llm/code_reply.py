"""Ask for code, check the reply, and re-ask once with a precise note when it is unusable.

Shared by the Architect (three modules, or one at a time), the engineers (one
module) and the zero-shot baseline. A reply is unusable when it was cut off
(finish_reason "length" or an unclosed fence), lacks a wanted module, or has a
module that does not parse or lacks its required function. The second reply
is merged with the first: for each module, the first usable version wins.
"""

from __future__ import annotations

import logging

from automodel.agents.llm import prompts
from automodel.agents.llm.client import ChatClient
from automodel.agents.llm.extract import Extraction, extract_modules
from automodel.errors import BrainError, LLMServiceError

log = logging.getLogger("automodel.llm")


def _merge(first: Extraction, second: Extraction, wanted: tuple[str, ...]) -> Extraction:
    merged = Extraction(truncated=second.truncated and first.truncated)
    for module in wanted:
        options = [e for e in (second, first) if module in e.modules]
        usable = [e for e in options if module not in e.problems]
        chosen = (usable or options or [None])[0]
        if chosen is None:
            merged.problems[module] = second.problems.get(module) or first.problems.get(
                module, f"{module}.py is missing"
            )
            continue
        merged.modules[module] = chosen.modules[module]
        if module in chosen.problems:
            merged.problems[module] = chosen.problems[module]
    return merged


def ask_for_modules(
    chat: ChatClient,
    role: str,
    messages: list[dict[str, str]],
    wanted: tuple[str, ...],
    retries: int,
) -> dict[str, str]:
    """The wanted module sources from the model.

    Returns every wanted module (a module that still does not parse is
    returned as it is: the loop's contract check turns it into a repair).
    Raises BrainError when a module is missing even after the re-request.
    """
    reply = chat.complete(role, messages)
    result = extract_modules(reply.text, wanted, reply.finish_reason)
    history = list(messages)
    last_text = reply.text
    for _ in range(retries):
        if result.ok(wanted):
            break
        log.warning(
            "LLM %s reply unusable (%s); asking again",
            role,
            "; ".join(list(result.problems.values()) + (["cut off"] if result.truncated else [])),
        )
        note = prompts.render(
            "retry_code.j2",
            problems=list(result.problems.values()),
            truncated=result.truncated,
            files=[f"{m}.py" for m in wanted],
        )
        history = history + [{"role": "assistant", "content": last_text}, {"role": "user", "content": note}]
        try:
            again = chat.complete(role, history)
        except LLMServiceError:
            if all(m in result.modules for m in wanted):
                # Flawed but complete code is still worth a run: the harness's repair loop can fix it.
                log.warning("LLM %s re-request failed; keeping the first reply's modules", role)
                break
            raise
        last_text = again.text
        result = _merge(result, extract_modules(again.text, wanted, again.finish_reason), wanted)
    missing = [m for m in wanted if m not in result.modules]
    if missing:
        raise BrainError(
            f"The LLM's {role} reply did not contain {', '.join(m + '.py' for m in missing)} even after "
            f"{retries} re-request(s) ({'; '.join(result.problems[m] for m in missing)}). Its replies are saved "
            "with the iteration (llm/*.reply.md); a stronger model or a larger max_tokens usually fixes this."
        )
    return result.modules
