"""Never stops: ignores ctx.should_stop(), blocks the harness's interrupt
(SIGALRM) and swallows every exception, keeps DataLoader workers busy and
leaves grandchildren behind (one in its own session). Only killing the whole
process tree ends it."""

WORKERS = 2   # DataLoader worker processes

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch


def train(model, data, ctx):
    cfg = HOSTILE_CONFIG  # noqa: F821 - set by tests/hostile/kit.py
    if ctx.preflight and not cfg.get("in_preflight"):
        return model  # behave during the preflight, misbehave in the real run
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    token = cfg["token"]
    sleeper = [sys.executable, "-c", "import time; time.sleep(1000)", token]
    subprocess.Popen(sleeper)
    subprocess.Popen(sleeper, start_new_session=True)  # escapes the process group
    print(
        "HOSTILE_REPORT", json.dumps({"marker": os.environ.get("AUTOMODEL_SANDBOX_ID"), "pid": os.getpid()}), flush=True
    )
    dataset = torch.utils.data.TensorDataset(torch.zeros(64, 1))
    while True:
        try:
            loader = torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=WORKERS, persistent_workers=True)
            while True:
                for _ in loader:
                    pass
        except BaseException:  # noqa: BLE001 - deliberately unkillable from inside
            continue
