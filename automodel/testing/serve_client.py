"""`automodel serve` from the outside (tests and benchmarks): start it, talk to it, stop it.

    with ServeProcess(run_dir, log_dir, "--workers", "2") as server:   # a free port; waits for /health
        client = server.client()
        status, body = client.predict([("a.png", png_bytes), ("b.jpg", jpg_bytes)], top_k=3)
        status, body = client.get("/info")
    server.returncode, server.stderr()                                 # stopped with SIGINT, as Ctrl-C does

The standard library only. One keep-alive connection per client (make one
per thread); JSON bodies come back parsed, others as text.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any


def multipart(files: list[tuple[str, bytes]], field: str = "file") -> tuple[bytes, str]:
    """A multipart/form-data body with one file field per (name, bytes), and its Content-Type."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        parts.append(
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class ServeClient:
    def __init__(self, host: str, port: int, timeout: float = 120.0):
        self.host, self.port, self.timeout = host, port, timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        for attempt in (0, 1):  # a keep-alive connection the server closed is reopened once
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=body, headers=headers or {})
                resp = self._conn.getresponse()
                raw = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        text = raw.decode("utf-8", "replace")
        if (resp.getheader("Content-Type") or "").startswith("application/json"):
            return resp.status, json.loads(text)
        return resp.status, text

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def predict(self, files: list[tuple[str, bytes]], top_k: int | None = None) -> tuple[int, Any]:
        body, ctype = multipart(files)
        path = "/predict" + (f"?top_k={top_k}" if top_k is not None else "")
        return self.request("POST", path, body, {"Content-Type": ctype})

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """`python -m automodel.cli serve RUN --port P ARGS...` in a subprocess, output in log_dir."""

    def __init__(self, run: Path, log_dir: Path, *args: str, ready_timeout: float = 600.0,
                 env: dict[str, str] | None = None):
        self.run, self.log_dir, self.args = Path(run), Path(log_dir), [str(a) for a in args]
        self.ready_timeout, self.env = ready_timeout, env
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None

    def start(self) -> "ServeProcess":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "automodel.cli", "serve", str(self.run), "--port", str(self.port), *self.args]
        with open(self.log_dir / "stdout.txt", "wb") as out, open(self.log_dir / "stderr.txt", "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, **(self.env or {})})
        end = time.monotonic() + self.ready_timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"automodel serve exited with {self.proc.returncode}:\n{self.stderr()[-4000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                probe = self.client(timeout=10)
                healthy = probe.get("/health")[0] == 200
                probe.close()
                if healthy:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"automodel serve did not answer /health in {self.ready_timeout} s:\n{self.stderr()[-4000:]}")

    def client(self, timeout: float = 120.0) -> ServeClient:
        return ServeClient("127.0.0.1", self.port, timeout)

    def stop(self, timeout: float = 60.0) -> int:
        """Ctrl-C (SIGINT) and wait; kill only when it does not stop in `timeout` seconds."""
        if self.proc is None:
            return -1
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        return self.returncode

    def stderr(self) -> str:
        path = self.log_dir / "stderr.txt"
        return path.read_text(errors="replace") if path.is_file() else ""

    def __enter__(self) -> "ServeProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
