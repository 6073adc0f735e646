"""A directory of past replies keyed by what was asked, for exact offline replays.

The key is a hash of the model name, the messages and the sampling settings,
so a replayed run that asks exactly the same questions gets exactly the same
answers without a server, and any divergence shows up as a cache miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CachedReply:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


def cache_key(model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    blob = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ReplyCache:
    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> CachedReply | None:
        path = self._path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return CachedReply(
                str(data["reply"]),
                data.get("finish_reason"),
                int(data.get("prompt_tokens", 0)),
                int(data.get("completion_tokens", 0)),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a damaged entry is a miss, and is overwritten by the next reply

    def put(self, key: str, model: str, role: str, messages: list[dict[str, str]], reply: CachedReply) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        data = {
            "model": model,
            "role": role,
            "messages": messages,
            "reply": reply.text,
            "finish_reason": reply.finish_reason,
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
        }
        # Written atomically: two runs sharing a cache never see half an entry.
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{key[:12]}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, indent=1)
        os.replace(tmp, self._path(key))
