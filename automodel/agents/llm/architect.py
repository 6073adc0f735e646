"""The Project Architect: the first complete pipeline, and the zero-shot baseline.

The published method writes the whole pipeline in ONE call, split afterwards
into data.py, model.py and train.py. The `sequential` ablation writes them in
three successive calls, each seeing the modules already written. The zero-shot
baseline is one plain request with the interfaces and nothing else: no team,
no expert knowledge, no profile beyond the class count and image size.
"""

from __future__ import annotations

from automodel.agents.llm import prompts
from automodel.agents.llm.client import ChatClient
from automodel.agents.llm.code_reply import ask_for_modules
from automodel.agents.llm.config import LLMConfig
from automodel.core import MODULES, Brief, Pipeline


def write_pipeline(chat: ChatClient, config: LLMConfig, brief: Brief) -> Pipeline:
    """One Architect call for all three modules (re-asked once if cut off or incomplete)."""
    context = prompts.brief_context(brief, config.profile_chars)
    messages = prompts.messages(
        "architect.system.j2", "architect.user.j2",
        sequential=False, interfaces=prompts.interfaces(), **context,
    )
    modules = ask_for_modules(chat, "architect", messages, MODULES, config.code_retries)
    return Pipeline(**modules)


def write_pipeline_sequential(chat: ChatClient, config: LLMConfig, brief: Brief) -> Pipeline:
    """Three Architect calls: data.py, then model.py seeing it, then train.py seeing both."""
    context = prompts.brief_context(brief, config.profile_chars)
    written: dict[str, str] = {}
    for step, module in enumerate(MODULES, 1):
        messages = prompts.messages(
            "architect.system.j2", "architect_module.user.j2",
            sequential=True, module=module, step=step, previous=dict(written),
            interface=prompts.interfaces((module,))[module], **context,
        )
        written.update(ask_for_modules(chat, "architect", messages, (module,), config.code_retries))
    return Pipeline(**written)


def zero_shot_messages(num_classes: int, image_size: tuple[int, int], channels: int) -> list[dict[str, str]]:
    height, width = image_size
    return prompts.messages(
        "zero_shot.system.j2", "zero_shot.user.j2",
        num_classes=num_classes, height=height, width=width, channels=channels, interfaces=prompts.interfaces(),
    )


def zero_shot_pipeline(chat: ChatClient, num_classes: int, image_size: tuple[int, int], channels: int) -> Pipeline:
    """The baseline: one plain request, no re-request (a baseline gets one chance, as published)."""
    modules = ask_for_modules(
        chat, "zero_shot", zero_shot_messages(num_classes, image_size, channels), MODULES, retries=0
    )
    return Pipeline(**modules)
