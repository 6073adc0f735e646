"""The record of a brain's LLM calls, kept with the iteration they were made for.

`save_calls(calls, iter_dir, stage)` writes, per call, iter_dir/llm/NN_stage_role.prompt.md
and .reply.md (readable as they are) and one line of llm/calls.jsonl with the
numbers (tokens, cost, seconds, retries). Numbering continues across saves into
the same iteration, so repairs never overwrite earlier calls.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from automodel.core import CallRecord, Usage
from automodel.files import clear_for_write

FOLDER = "llm"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "call"


def save_calls(calls: list[CallRecord], iter_dir: Path, stage: str) -> Usage:
    """Write the calls next to the iteration and return their usage."""
    if not calls:
        return Usage()
    folder = iter_dir / FOLDER
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        clear_for_write(folder)  # a child running at a weak sandbox level may have planted something here
    folder.mkdir(exist_ok=True)
    start = len(list(folder.glob("*.prompt.md")))
    with open(folder / "calls.jsonl", "a", encoding="utf-8") as index:
        for i, call in enumerate(calls, start=start + 1):
            stem = f"{i:02d}_{_safe(stage)}_{_safe(call.role)}"
            (folder / f"{stem}.prompt.md").write_text(call.prompt, encoding="utf-8")
            (folder / f"{stem}.reply.md").write_text(call.reply, encoding="utf-8")
            meta = {k: v for k, v in dataclasses.asdict(call).items() if k not in ("prompt", "reply")}
            index.write(json.dumps({"file": stem, **meta}, default=str) + "\n")
    return Usage.of(calls)
