"""Tries to write outside its iteration directory and to reach the network;
records the outcome of every attempt in a HOSTILE_REPORT line on stdout."""

import json
import os
import socket
import subprocess
from pathlib import Path


def _write(path: str) -> str:
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("pwned")
        return "written"
    except OSError as err:
        return type(err).__name__


def _connect(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=3) as sock:
            sock.sendall(b"pwned")
        return "connected"
    except OSError as err:
        return type(err).__name__


def _remount(target: str) -> str:
    try:
        out = subprocess.run(["mount", "-o", "remount,rw", target], capture_output=True, timeout=10)
        return "remounted" if out.returncode == 0 else f"exit {out.returncode}"
    except (OSError, subprocess.TimeoutExpired) as err:
        return type(err).__name__


def train(model, data, ctx):
    cfg = HOSTILE_CONFIG  # noqa: F821 - set by tests/hostile/kit.py
    report = {"writes": {}, "connects": {}, "remounts": {}}
    # As root, a sandbox that kept its capabilities could make the read-only views writable.
    status = Path("/proc/self/status").read_text()
    report["cap_eff"] = next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:"))
    for target in cfg.get("remount_targets", []):
        report["remounts"][target] = _remount(target)
    for path in cfg["write_targets"]:
        report["writes"][path] = _write(path)
    report["connects"]["local"] = _connect("127.0.0.1", int(cfg["local_port"]))
    report["connects"]["public"] = _connect(cfg.get("public_ip", "1.1.1.1"), 53)
    report["uid"] = os.getuid()
    print("HOSTILE_REPORT", json.dumps(report), flush=True)
    return model
