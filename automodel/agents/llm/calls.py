"""The record of each LLM call, and how the loop saves them next to an iteration.

`save_calls(calls, dir)` writes, per call, NNN_role.prompt.md and
NNN_role.reply.md (readable as they are) and one line of calls.jsonl with the
numbers (tokens, cost, seconds, retries). Numbering continues across saves into
the same folder, so repairs of one iteration never overwrite earlier calls.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from automodel.agents.base import CallRecord


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


def usage_totals(calls: Iterable[CallRecord]) -> dict[str, float | int | None]:
    """Tokens and cost of a set of calls; cost is None when no call had a known price."""
    calls = list(calls)
    costs = [c.cost_usd for c in calls if c.cost_usd is not None]
    return {
        "calls": len(calls),
        "prompt_tokens": sum(c.prompt_tokens for c in calls),
        "completion_tokens": sum(c.completion_tokens for c in calls),
        "cost_usd": round(sum(costs), 6) if costs else None,
    }


def _safe(role: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", role) or "call"


def save_calls(calls: Iterable[CallRecord], directory: str | Path) -> list[Path]:
    """Write the calls into `directory` (created); return the files written."""
    directory = Path(directory)
    calls = list(calls)
    if not calls:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "calls.jsonl"
    start = 1
    if log.exists():
        start += sum(1 for line in log.read_text(encoding="utf-8").splitlines() if line.strip())
    written = []
    with open(log, "a", encoding="utf-8") as fh:
        for i, call in enumerate(calls, start):
            stem = f"{i:03d}_{_safe(call.role)}"
            prompt_file, reply_file = directory / f"{stem}.prompt.md", directory / f"{stem}.reply.md"
            prompt_file.write_text(call.prompt, encoding="utf-8")
            reply_file.write_text(call.reply, encoding="utf-8")
            meta = {k: v for k, v in asdict(call).items() if k not in ("prompt", "reply")}
            meta.update({"n": i, "prompt_file": prompt_file.name, "reply_file": reply_file.name})
            fh.write(json.dumps(meta, default=str) + "\n")
            written += [prompt_file, reply_file]
    written.append(log)
    return written
