"""The brains that can play the agent roles, by name: the built-in expert and an LLM.

`--agent` offers every registered name plus "auto" (the LLM when one is
configured, else the expert). A brain is made by its factory from the
BrainConfig, then told the task with `brain.start(brief)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from automodel.agents.base import Brain
from automodel.errors import UsageError


@dataclass(frozen=True)
class BrainConfig:
    agent: str = "auto"             # a registered brain name, or "auto" (LLM when configured, else expert)
    model: str | None = None        # LLM model name (default from AUTOMODEL_LLM_MODEL)
    base_url: str | None = None     # OpenAI-compatible server (default OPENAI_BASE_URL, else OpenAI)
    init: str = "single"            # "single": the Architect writes all modules in one call; "sequential": three calls
    cache_dir: str | None = None    # LLM reply cache for exact offline replays


def _expert(cfg: BrainConfig) -> Brain:
    from automodel.agents.expert.brain import ExpertBrain

    return ExpertBrain()


def _llm(cfg: BrainConfig) -> Brain:
    from automodel.agents import llm

    return llm.make_llm_brain(model=cfg.model, base_url=cfg.base_url, init=cfg.init, cache_dir=cfg.cache_dir)


# name -> (factory, one line for --help)
BRAINS: dict[str, tuple[Callable[[BrainConfig], Brain], str]] = {
    "expert": (_expert, "the built-in rules, no network"),
    "llm": (_llm, "an LLM through the openai client"),
}
AGENT_CHOICES = ("auto", *BRAINS)


def resolve(cfg: BrainConfig) -> str:
    """The registered name `cfg.agent` stands for ("auto" becomes llm or expert)."""
    if cfg.agent == "auto":
        from automodel.agents import llm

        return "llm" if llm.llm_configured(base_url=cfg.base_url) else "expert"
    if cfg.agent not in BRAINS:
        raise UsageError(f"--agent must be one of {', '.join(AGENT_CHOICES)}, not {cfg.agent!r}.")
    return cfg.agent


def make_brain(cfg: BrainConfig) -> Brain:
    """The brain for a run; call `start(brief)` on it before any role."""
    factory, _ = BRAINS[resolve(cfg)]
    return factory(cfg)


def describe(brain: Brain) -> str:
    return "built-in expert (no LLM)" if brain.name == "expert" else f"LLM {brain.name}"
