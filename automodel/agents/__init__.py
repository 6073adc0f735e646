"""The agent roles and the brains that can play them (built-in expert, LLM)."""
