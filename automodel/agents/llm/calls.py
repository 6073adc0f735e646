"""The record of each LLM call: what the client knows beyond the Brain protocol.

The loop saves the records next to their iteration (automodel.search.calls).
"""

from __future__ import annotations

from dataclasses import dataclass

from automodel.core import CallRecord


@dataclass(frozen=True)
class LLMCallRecord(CallRecord):
    """A CallRecord with what the LLM client knows beyond the Brain protocol."""

    model: str = ""
    finish_reason: str | None = None
    attempts: int = 1            # HTTP requests made for this call (1 = no retry)
    waited_s: float = 0.0        # seconds spent waiting between retries


def render_messages(messages: list[dict[str, str]]) -> str:
    """The prompt as one readable markdown document."""
    return "\n\n".join(f"## {m['role']}\n\n{m['content']}" for m in messages) + "\n"
