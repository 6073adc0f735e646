"""How the LLM brain reaches its model: resolved once from arguments and environment.

Standard variables are honoured so a person's existing setup just works:
OPENAI_API_KEY, OPENAI_BASE_URL, and AUTOMODEL_LLM_MODEL for the default model.
A local OpenAI-compatible server (vLLM, Ollama, LM Studio, llama.cpp) needs no
real key: a placeholder is sent.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from automodel.errors import LLMConfigError

DEFAULT_MODEL = "gpt-4o-mini"
PLACEHOLDER_KEY = "sk-no-key-needed"  # local servers ignore the key but the client wants one
INIT_MODES = ("single", "sequential")

NO_KEY_HELP = (
    "No key found: set OPENAI_API_KEY, or pass --base-url http://localhost:8000/v1 for a local "
    "OpenAI-compatible server (vLLM; Ollama serves http://localhost:11434/v1, LM Studio "
    "http://localhost:1234/v1, llama.cpp's llama-server http://localhost:8080/v1) and --model with the name it serves. "
    "Or use --agent expert, the built-in brain that needs no LLM."
)


@dataclass(frozen=True)
class LLMConfig:
    model: str = DEFAULT_MODEL            # model name sent to the server
    base_url: str | None = None           # None: api.openai.com
    api_key: str | None = None            # None with a base_url: a placeholder is sent
    timeout: float = 300.0                # seconds per request before it counts as hung
    max_attempts: int = 6                 # tries per call on 429/5xx/connection errors/timeouts
    backoff_base: float = 1.0             # seconds before the 2nd try; doubles each time (with jitter)
    backoff_max: float = 60.0             # longest single wait, seconds (Retry-After included)
    max_total_wait: float = 600.0         # seconds of waiting per call before giving up
    temperature: float | None = None      # None: the server's default (some models accept no other)
    max_tokens: int | None = None         # completion cap sent to the server; None: not sent
    cache_dir: Path | None = None         # reply cache for exact offline replays; None: off
    init: str = "single"                  # "single": one Architect call; "sequential": data, model, train in turn
    code_retries: int = 1                 # re-requests of a truncated or unparseable code reply
    json_retries: int = 1                 # re-requests of an Analyst reply that is not a decision
    history_chars: int = 16000            # hard cap on the history rendered into the Analyst prompt
    profile_chars: int = 5000             # cap on the dataset profile rendered into prompts
    summary_chars: int = 400              # cap on each module's summary text
    extra: dict[str, Any] = field(default_factory=dict)  # extra body fields for the server (e.g. {"seed": 0})

    @property
    def offline(self) -> bool:
        """No key and no server: only replies already in the cache can be served."""
        return not self.api_key and not self.base_url

    def public(self) -> dict[str, Any]:
        """The resolved settings to save with a run, without the key."""
        data = asdict(self)
        data["api_key"] = "set" if self.api_key else None
        data["cache_dir"] = str(self.cache_dir) if self.cache_dir else None
        return data


def _env_float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise LLMConfigError(f"${name} must be a number of seconds; it is {raw!r}. Fix or unset it.") from None


def resolve_config(
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    *,
    env: dict[str, str] | None = None,
    cache_dir: str | Path | None = None,
    init: str = "single",
    timeout: float | None = None,
    **overrides: Any,
) -> LLMConfig:
    """Arguments first, then OPENAI_* / AUTOMODEL_LLM_* variables, then defaults.

    Raises LLMConfigError with the fix when there is neither a key nor a
    server (unless a reply cache is given: then cached replies are replayed).
    """
    env = os.environ if env is None else env
    if init not in INIT_MODES:
        raise LLMConfigError(f"--init must be one of {', '.join(INIT_MODES)}; got {init!r}.")
    base_url = (base_url or env.get("OPENAI_BASE_URL") or "").strip() or None
    api_key = (api_key or env.get("OPENAI_API_KEY") or "").strip() or None
    cache = Path(cache_dir).expanduser() if cache_dir else None
    if not api_key and not base_url and cache is None:
        raise LLMConfigError(NO_KEY_HELP)
    if base_url and not base_url.startswith(("http://", "https://")):
        raise LLMConfigError(f"--base-url must be an http(s) URL such as http://localhost:8000/v1; got {base_url!r}.")
    fields = {
        "model": (model or env.get("AUTOMODEL_LLM_MODEL") or DEFAULT_MODEL).strip(),
        "base_url": base_url,
        "api_key": api_key,
        "timeout": float(timeout)
        if timeout is not None
        else _env_float(env, "AUTOMODEL_LLM_TIMEOUT", LLMConfig.timeout),
        "cache_dir": cache,
        "init": init,
    }
    unknown = set(overrides) - set(LLMConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown LLM settings: {', '.join(sorted(unknown))}")
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return LLMConfig(**fields)


def llm_configured(base_url: str | None = None, api_key: str | None = None, env: dict[str, str] | None = None) -> bool:
    """True when a key or a server is given or set in the environment (what `--agent auto` checks)."""
    env = os.environ if env is None else env
    return bool(
        (base_url or "").strip()
        or (api_key or "").strip()
        or (env.get("OPENAI_API_KEY") or "").strip()
        or (env.get("OPENAI_BASE_URL") or "").strip()
    )
