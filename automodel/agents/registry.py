"""Choosing the brain that plays the agent roles: the built-in expert or an LLM."""

from __future__ import annotations

from dataclasses import dataclass
from automodel.agents.base import Brain, Brief
from automodel.errors import UsageError


@dataclass(frozen=True)
class BrainConfig:
    agent: str = "auto"             # "expert", "llm" or "auto" (LLM when configured, else expert)
    model: str | None = None        # LLM model name (default from AUTOMODEL_LLM_MODEL)
    base_url: str | None = None     # OpenAI-compatible server (default OPENAI_BASE_URL, else OpenAI)
    init: str = "single"            # "single": the Architect writes all modules in one call; "sequential": three calls
    cache_dir: str | None = None    # LLM reply cache for exact offline replays


def make_brain(cfg: BrainConfig, brief: Brief) -> Brain:
    """The brain for a run. `brief` (dataset, hardware, budget) informs every LLM role,
    also on resume when the Architect does not run again."""
    if cfg.agent not in ("expert", "llm", "auto"):
        raise UsageError(f"--agent must be expert, llm or auto, not {cfg.agent!r}.")
    if cfg.agent == "expert":
        from automodel.agents.expert.brain import ExpertBrain

        return ExpertBrain()
    from automodel.agents import llm

    if cfg.agent == "auto" and not llm.llm_configured(base_url=cfg.base_url):
        from automodel.agents.expert.brain import ExpertBrain

        return ExpertBrain()
    brain = llm.make_llm_brain(model=cfg.model, base_url=cfg.base_url, init=cfg.init, cache_dir=cfg.cache_dir)
    brain.brief = brief
    return brain


def describe(brain: Brain) -> str:
    return "built-in expert (no LLM)" if brain.name == "expert" else f"LLM {brain.name}"
