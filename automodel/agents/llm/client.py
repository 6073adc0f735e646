"""One chat completion, done robustly: retries we control, usage, cost, cache.

The openai client's own retries are switched off so every retry is ours:
visible in the log and the call record, tested, honouring Retry-After, and
bounded by a total wait. Retried: 408/409/429/5xx, connection errors,
timeouts and 200 answers that are not a chat completion. Not retried: a
rejected key or unknown model (LLMConfigError, the user must act) and other
4xx (LLMServiceError).
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

import openai

from automodel.agents.llm.cache import CachedReply, ReplyCache, cache_key
from automodel.agents.llm.calls import LLMCallRecord, render_messages
from automodel.agents.llm.config import PLACEHOLDER_KEY, LLMConfig
from automodel.agents.llm.pricing import cost_usd
from automodel.errors import LLMConfigError, LLMServiceError

log = logging.getLogger("automodel.llm")

RETRY_STATUS = {408, 409, 429}


class MalformedResponse(Exception):
    """The server answered 200 but not with a usable chat completion."""


@dataclass(frozen=True)
class ChatResult:
    text: str
    finish_reason: str | None
    record: LLMCallRecord


def retry_after_seconds(headers: Any) -> float | None:
    """The server's requested wait: retry-after-ms, or Retry-After in seconds or as an HTTP date."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _describe(err: Exception) -> str:
    if isinstance(err, openai.APITimeoutError):
        return "the request timed out"
    if isinstance(err, openai.APIConnectionError):
        return f"cannot connect ({err.__cause__ or err})"
    if isinstance(err, openai.APIStatusError):
        return f"HTTP {err.status_code}: {str(err.message)[:300]}"
    if isinstance(err, MalformedResponse):
        return str(err)
    return f"{type(err).__name__}: {err}"


class ChatClient:
    """Chat completions for the LLM roles; every call appends a record to `calls`."""

    def __init__(self, config: LLMConfig, sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self.calls: list[LLMCallRecord] = []
        self._sleep = sleep
        self._cache = ReplyCache(config.cache_dir) if config.cache_dir else None
        self._client: openai.OpenAI | None = None

    def _openai(self) -> openai.OpenAI:
        if self._client is None:
            self._client = openai.OpenAI(
                api_key=self.config.api_key or PLACEHOLDER_KEY,
                base_url=self.config.base_url,
                timeout=self.config.timeout,
                max_retries=0,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = dict(self.config.extra)
        if self.config.temperature is not None:
            params["temperature"] = self.config.temperature
        if self.config.max_tokens is not None:
            params["max_tokens"] = self.config.max_tokens
        return params

    def complete(self, role: str, messages: list[dict[str, str]]) -> ChatResult:
        """Ask once (with retries on transient faults); raise LLMServiceError/LLMConfigError when it cannot."""
        cfg = self.config
        params = self._params()
        prompt_text = render_messages(messages)
        key = cache_key(cfg.model, messages, params)
        if self._cache is not None:
            hit = self._cache.get(key)
            if hit is not None:
                record = LLMCallRecord(
                    role,
                    prompt_text,
                    hit.text,
                    hit.prompt_tokens,
                    hit.completion_tokens,
                    cost_usd=0.0,
                    cached=True,
                    model=cfg.model,
                    finish_reason=hit.finish_reason,
                    attempts=0,
                )
                self.calls.append(record)
                return ChatResult(hit.text, hit.finish_reason, record)
        if cfg.offline:
            raise LLMConfigError(
                f"The reply cache {cfg.cache_dir} has no reply for this {role} prompt (key {key[:12]}), so the run "
                "has left the recorded one and needs a model: set OPENAI_API_KEY or pass --base-url."
            )

        start = time.monotonic()
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._openai().chat.completions.create(model=cfg.model, messages=messages, **params)
                if not response.choices:
                    # Some servers answer 200 with only an error object (e.g. "model overloaded").
                    raise MalformedResponse(
                        f"a response without choices: {str(getattr(response, 'error', None) or response)[:200]}"
                    )
                break
            except openai.APIStatusError as err:
                if err.status_code == 401 or err.status_code == 403:
                    self._record_failure(role, prompt_text, err, attempt, waited, start)
                    raise LLMConfigError(
                        f"The LLM server at {cfg.base_url or 'api.openai.com'} rejected the key (HTTP "
                        f"{err.status_code}: "
                        f"{str(err.message)[:200]}). Check OPENAI_API_KEY, or pass --base-url for a local server."
                    ) from None
                if err.status_code == 404:
                    self._record_failure(role, prompt_text, err, attempt, waited, start)
                    raise LLMConfigError(
                        f"The LLM server at {cfg.base_url or 'api.openai.com'} answered 404 for model '{cfg.model}' "
                        f"({str(err.message)[:200]}). Pass --model with a name the server lists at /v1/models, "
                        "and check that --base-url ends in /v1."
                    ) from None
                if err.status_code not in RETRY_STATUS and err.status_code < 500:
                    self._record_failure(role, prompt_text, err, attempt, waited, start)
                    raise LLMServiceError(f"The LLM server refused the {role} request: {_describe(err)}.") from None
                wanted = retry_after_seconds(err.response.headers)
                error = err
            except openai.APIConnectionError as err:  # includes timeouts
                wanted, error = None, err
            except (MalformedResponse, openai.APIResponseValidationError, ValueError) as err:
                # A body that is not a chat completion (an HTML error page, truncated JSON): a server fault.
                wanted, error = (
                    None,
                    err
                    if isinstance(err, MalformedResponse)
                    else MalformedResponse(f"an unreadable response ({type(err).__name__}: {str(err)[:200]})"),
                )
            if attempt >= cfg.max_attempts:
                self._record_failure(role, prompt_text, error, attempt, waited, start)
                raise LLMServiceError(
                    f"The LLM server at {cfg.base_url or 'api.openai.com'} failed the {role} request {attempt} times "
                    f"(last: {_describe(error)}). Check that the server is up and not overloaded, then resume the run."
                ) from None
            delay = self._delay(attempt, wanted)
            if waited + delay > cfg.max_total_wait:
                self._record_failure(role, prompt_text, error, attempt, waited, start)
                raise LLMServiceError(
                    f"The LLM server keeps failing the {role} request ({_describe(error)}); waiting {delay:.1f} s "
                    "more would "
                    f"exceed the {cfg.max_total_wait:.0f} s retry budget. Try again later, then resume the run."
                ) from None
            log.warning(
                "LLM %s call: %s; retry %d/%d in %.2f s", role, _describe(error), attempt, cfg.max_attempts - 1, delay
            )
            self._sleep(delay)
            waited += delay

        choice = response.choices[0] if response.choices else None
        text = (choice.message.content if choice is not None and choice.message is not None else None) or ""
        finish = choice.finish_reason if choice is not None else None
        usage = response.usage
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        record = LLMCallRecord(
            role,
            prompt_text,
            text,
            prompt_tokens,
            completion_tokens,
            cost_usd=cost_usd(cfg.model, prompt_tokens, completion_tokens),
            seconds=round(time.monotonic() - start, 3),
            model=cfg.model,
            finish_reason=finish,
            attempts=attempt,
            waited_s=round(waited, 3),
        )
        self.calls.append(record)
        if self._cache is not None:
            self._cache.put(key, cfg.model, role, messages, CachedReply(text, finish, prompt_tokens, completion_tokens))
        return ChatResult(text, finish, record)

    def _delay(self, attempt: int, wanted: float | None) -> float:
        if wanted is not None:
            return wanted  # the server knows best; the total budget still bounds it
        base = self.config.backoff_base * (2 ** (attempt - 1))
        return min(self.config.backoff_max, base) * (0.5 + random.random() / 2)

    def _record_failure(
        self, role: str, prompt: str, err: Exception, attempt: int, waited: float, start: float
    ) -> None:
        self.calls.append(
            LLMCallRecord(
                role,
                prompt,
                "",
                seconds=round(time.monotonic() - start, 3),
                error=_describe(err),
                model=self.config.model,
                attempts=attempt,
                waited_s=round(waited, 3),
            )
        )
