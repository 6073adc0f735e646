"""The Data, Model and Training Engineers: rewrite one module, or repair it after a crash.

Each engineer sees the full current pipeline (its module must keep fitting the
other two), the Analyst's instruction, its interface file verbatim and, when
repairing, the harness's error message or traceback. Only its own module is
taken from the reply, even if the model rewrote others too.
"""

from __future__ import annotations

from automodel.agents.llm import prompts
from automodel.agents.llm.client import ChatClient
from automodel.agents.llm.code_reply import ask_for_modules
from automodel.agents.llm.config import LLMConfig
from automodel.core import ENGINEERS, MODULES, Brief, Decision, Pipeline

ERROR_CHARS = 6000  # the end of a traceback is what names the cause


def engineer_messages(module: str, pipeline: Pipeline, decision: Decision | None, error: str | None,
                      brief: Brief | None, config: LLMConfig) -> list[dict[str, str]]:
    if module not in MODULES:
        raise ValueError(f"unknown module {module!r}; expected one of {MODULES}")
    error_text = None
    if error:
        error_text = error if len(error) <= ERROR_CHARS else "… (start cut)\n" + error[-ERROR_CHARS:]
    return prompts.messages(
        "engineer.system.j2",
        "engineer.user.j2",
        module=module,
        title=ENGINEERS[module],
        pipeline=pipeline.as_dict(),
        interface=prompts.interfaces((module,))[module],
        # No decision: a repair of the Architect's first pipeline.
        instruction=decision.instruction
        if decision
        else "None: the Project Architect just wrote this pipeline; only repair it.",
        reason=decision.reason if decision else "",
        repair=bool(error),
        error=error_text,
        **prompts.brief_context(brief, config.profile_chars),
    )


def rewrite_module(
    chat: ChatClient,
    config: LLMConfig,
    module: str,
    pipeline: Pipeline,
    decision: Decision | None,
    error: str | None,
    brief: Brief | None,
) -> str:
    messages = engineer_messages(module, pipeline, decision, error, brief, config)
    return ask_for_modules(chat, f"{module}_engineer", messages, (module,), config.code_retries)[module]
