"""A local OpenAI-compatible endpoint that replays scripted replies (tests and offline demos).

    python -m automodel.testing.replay_server --script tests/llm_scripts/demo.yaml --port 8765
    automodel fit ./dataset --agent llm --base-url http://127.0.0.1:8765/v1 --iters 4

It serves POST /v1/chat/completions and GET /v1/models on 127.0.0.1 only, and
never contacts anything. A script is a YAML or JSON list of steps (or a
mapping with `steps:` and/or `roles: {role: [steps]}`, plus `repeat_last`):

    - role: architect            # optional: matched against "ROLE: <name>" in the system prompt
      reply_file: good_pipeline.md   # or reply: "text"; relative to the script
    - role: analyst
      reply: 'not json at all'
    - role: analyst
      status: 429                # a fault: any HTTP status, with an OpenAI-style error body
      retry_after: 0.2           # seconds, sent as Retry-After
    - hang: 5                    # wait 5 s, then drop the connection (the client's timeout fires)
    - disconnect: true           # drop the connection at once
    - garbage: true              # answer 200 with a body that is not JSON
    - role: model_engineer
      reply_file: model_fixed.md
      truncate: 400              # send only the first 400 characters, finish_reason "length"

Each request takes the first unused step whose role matches (a step without a
role matches any request; role "engineer" matches every *_engineer). When a
role has no step left, its last good reply is repeated (repeat_last, the
default) or the request fails with HTTP 400 saying so. Every request is
recorded in `server.requests` (and in --log FILE as JSON lines).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from automodel.errors import UsageError

HOST = "127.0.0.1"
ROLE_MARKER = re.compile(r"ROLE:\s*([A-Za-z0-9_\-]+)")
STEP_KEYS = {"role", "reply", "reply_file", "status", "retry_after", "message", "hang", "disconnect", "garbage",
             "truncate", "finish_reason", "usage", "note"}


class ScriptError(UsageError):
    """A replay script that cannot be used as written."""


@dataclass
class Step:
    role: str | None = None
    reply: str | None = None
    status: int | None = None
    retry_after: float | None = None
    message: str | None = None
    hang: float | None = None
    disconnect: bool = False
    garbage: bool = False
    truncate: int | None = None
    finish_reason: str = "stop"
    usage: dict[str, int] | None = None
    used: bool = False

    @property
    def kind(self) -> str:
        if self.status is not None:
            return f"status {self.status}"
        if self.disconnect:
            return "disconnect"
        if self.garbage:
            return "garbage"
        if self.hang is not None and self.reply is None:
            return f"hang {self.hang}s"
        if self.truncate is not None:
            return "truncated reply"
        return "slow reply" if self.hang else "reply"

    def matches(self, role: str) -> bool:
        if self.role is None or self.role == role:
            return True
        return self.role == "engineer" and role.endswith("_engineer")


@dataclass
class Script:
    steps: list[Step]
    repeat_last: bool = True
    source: str = "<script>"


def _step(raw: Any, base: Path, where: str, role: str | None = None) -> Step:
    if isinstance(raw, str):
        raw = {"reply": raw}
    if not isinstance(raw, dict):
        raise ScriptError(
            f"{where}: a step must be a mapping (reply/reply_file/status/hang/...) or a reply string; got "
            f"{type(raw).__name__}."
        )
    unknown = set(raw) - STEP_KEYS
    if unknown:
        raise ScriptError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; a step may have {', '.join(sorted(STEP_KEYS))}."
        )
    reply = raw.get("reply")
    if raw.get("reply_file"):
        path = (base / str(raw["reply_file"])).resolve()
        try:
            reply = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ScriptError(
                f"{where}: cannot read reply_file {path} ({err.strerror}). Paths are relative to the script's folder."
            ) from None
    step = Step(
        role=raw.get("role", role),
        reply=None if reply is None else str(reply),
        status=int(raw["status"]) if raw.get("status") is not None else None,
        retry_after=float(raw["retry_after"]) if raw.get("retry_after") is not None else None,
        message=raw.get("message"),
        hang=float(raw["hang"]) if raw.get("hang") is not None else None,
        disconnect=bool(raw.get("disconnect", False)),
        garbage=bool(raw.get("garbage", False)),
        finish_reason=str(raw.get("finish_reason", "stop")),
        usage=raw.get("usage"),
    )
    if raw.get("truncate") is not None:
        step.truncate = int(raw["truncate"])
        step.finish_reason = "length"
    if step.reply is None and step.status is None and step.hang is None and not step.disconnect and not step.garbage:
        raise ScriptError(
            f"{where}: the step has neither a reply (reply/reply_file) nor a fault (status/hang/disconnect/garbage)."
        )
    return step


def load_script(source: str | Path | list | dict, base: Path | None = None) -> Script:
    """A Script from a YAML/JSON file path, or from already-parsed data."""
    name = "<script>"
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ScriptError(f"Cannot read the replay script {path} ({err.strerror}).") from None
        try:
            import yaml

            data = yaml.safe_load(text)  # JSON is YAML too
        except Exception as err:  # noqa: BLE001
            raise ScriptError(f"The replay script {path} is not valid YAML/JSON: {err}") from None
        base, name = path.resolve().parent, str(path)
    else:
        data = source
    base = base or Path.cwd()
    repeat = True
    steps: list[Step] = []
    if isinstance(data, dict):
        repeat = bool(data.get("repeat_last", True))
        for i, raw in enumerate(data.get("steps") or []):
            steps.append(_step(raw, base, f"{name} step {i + 1}"))
        for role, items in (data.get("roles") or {}).items():
            for i, raw in enumerate(items or []):
                steps.append(_step(raw, base, f"{name} roles.{role}[{i + 1}]", role=str(role)))
    elif isinstance(data, list):
        steps = [_step(raw, base, f"{name} step {i + 1}") for i, raw in enumerate(data)]
    else:
        raise ScriptError(f"The replay script {name} must be a list of steps or a mapping with steps/roles.")
    return Script(steps, repeat, name)


def detect_role(messages: list[dict[str, Any]]) -> str:
    """The role named by "ROLE: <name>" in the system prompt (else in any message), or "unknown"."""
    ordered = [m for m in messages if m.get("role") == "system"] + [m for m in messages if m.get("role") != "system"]
    for message in ordered:
        content = message.get("content")
        if isinstance(content, list):  # content parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        m = ROLE_MARKER.search(str(content or ""))
        if m:
            return m.group(1)
    return "unknown"


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds an idle keep-alive connection may hold a handler thread

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: requests are recorded instead
        return

    def _send_json(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        kind = {400: "invalid_request_error", 404: "not_found", 429: "rate_limit_exceeded"}.get(status, "server_error")
        self._send_json(status, {"error": {"message": message, "type": kind, "code": kind}}, headers)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send_json(
                200,
                {"object": "list", "data": [{"id": self.server.model_name, "object": "model", "owned_by": "replay"}]},
            )
        else:
            self._error(
                404, f"no such endpoint {self.path}; the replay server serves /v1/chat/completions and /v1/models"
            )

    def do_POST(self) -> None:  # noqa: N802
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._error(404, f"no such endpoint {self.path}")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            messages = list(body.get("messages") or [])
        except (ValueError, TypeError):
            self._error(400, "the request body is not a JSON chat completion request")
            return
        role = detect_role(messages)
        step, action = self.server.next_step(role)
        self.server.record(role, body, step, action)
        if step is None:
            self._error(400, f"the replay script has no step left for role '{role}' (and no earlier reply to repeat)")
            return
        if step.disconnect:
            self.close_connection = True
            return
        if step.hang is not None:
            self.server.stopping.wait(step.hang)
            if step.reply is None:
                self.close_connection = True  # drop it without an answer
                return
        if step.garbage:
            body = b"<html><body>502 Bad Gateway</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if step.status is not None:
            headers = {"Retry-After": f"{step.retry_after:g}"} if step.retry_after is not None else {}
            self._error(step.status, step.message or f"scripted fault: HTTP {step.status}", headers)
            return
        text = step.reply or ""
        if step.truncate is not None:
            text = text[: step.truncate]
        prompt_chars = "".join(str(m.get("content", "")) for m in messages)
        usage = {"prompt_tokens": _tokens(prompt_chars), "completion_tokens": _tokens(text)}
        usage.update(step.usage or {})
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        self._send_json(
            200,
            {
                "id": f"chatcmpl-replay-{len(self.server.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model") or self.server.model_name,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": step.finish_reason}
                ],
                "usage": usage,
            },
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, script: Script, port: int, log_file: Path | None, model_name: str):
        super().__init__((HOST, port), _Handler)
        self.script = script
        self.model_name = model_name
        self.requests: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._served_good: list[Step] = []  # reply steps served so far, in order
        self._log = log_file

    def next_step(self, role: str) -> tuple[Step | None, str]:
        with self._lock:
            for i, step in enumerate(self.script.steps):
                if not step.used and step.matches(role):
                    step.used = True
                    if (
                        step.reply is not None
                        and step.status is None
                        and step.truncate is None
                        and not step.disconnect
                        and not step.garbage
                    ):
                        self._served_good.append(step)
                    return step, f"step {i + 1}: {step.kind}"
            if self.script.repeat_last:
                for step in reversed(self._served_good):
                    if step.matches(role):
                        return step, "repeat of the last good reply"
            return None, "script exhausted"

    def record(self, role: str, body: dict, step: Step | None, action: str) -> None:
        entry = {
            "n": len(self.requests) + 1,
            "time": time.time(),
            "role": role,
            "model": body.get("model"),
            "action": action,
            "messages": body.get("messages"),
            "params": {k: v for k, v in body.items() if k not in ("messages",)},
        }
        with self._lock:
            self.requests.append(entry)
            if self._log is not None:
                with open(self._log, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({k: v for k, v in entry.items() if k != "messages"}) + "\n")


class ReplayServer:
    """The scripted endpoint, started in a background thread; use as a context manager."""

    def __init__(
        self,
        script: Script | str | Path | list | dict,
        port: int = 0,
        log_file: str | Path | None = None,
        model_name: str = "replay-model",
    ):
        self.script = script if isinstance(script, Script) else load_script(script)
        self._server = _Server(self.script, port, Path(log_file) if log_file else None, model_name)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        return list(self._server.requests)

    def requests_for(self, role: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["role"] == role]

    def unused_steps(self) -> list[Step]:
        return [s for s in self.script.steps if not s.used]

    def start(self) -> "ReplayServer":
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="replay-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.stopping.set()  # ends scripted hangs at once
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "ReplayServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m automodel.testing.replay_server",
        description="Serve scripted LLM replies on 127.0.0.1 as an OpenAI-compatible endpoint (offline demos and "
        "tests).",
    )
    parser.add_argument("--script", required=True, help="YAML or JSON replay script (see the module docstring)")
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free port); default 8765")
    parser.add_argument("--log", help="append one JSON line per request to this file")
    args = parser.parse_args(argv)
    try:
        server = ReplayServer(args.script, port=args.port, log_file=args.log)
    except UsageError as err:
        print(f"replay_server: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        print(
            f"replay_server: error: cannot listen on {HOST}:{args.port} ({err.strerror}); pick another --port.",
            file=sys.stderr,
        )
        return 2
    server.start()
    print(f"replay server: {len(server.script.steps)} scripted steps from {args.script}", flush=True)
    print(
        f"listening on {server.base_url}  (use: --agent llm --base-url {server.base_url}); Ctrl-C stops it", flush=True
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
