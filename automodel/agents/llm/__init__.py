"""The LLM brain: the agent roles played by a model reached through the openai client."""

from automodel.agents.llm.brain import LLMBrain, make_llm_brain
from automodel.agents.llm.calls import LLMCallRecord
from automodel.agents.llm.config import LLMConfig, llm_configured, resolve_config

__all__ = ["LLMBrain", "LLMCallRecord", "LLMConfig", "llm_configured", "make_llm_brain", "resolve_config"]
