"""Claims training is over at once (appends {"phase": "train_done"} to
events.jsonl), ignores the harness's interrupt (SIGALRM) and ctx.should_stop(),
and goes on training for HOSTILE_CONFIG["seconds"] (100 by default). The
parent's own clock must end it at the budget plus the graces."""

import json
import signal
import time

import torch
import torch.nn.functional as F


def train(model, data, ctx):
    if ctx.preflight:
        return model
    with open("events.jsonl", "a") as fh:
        fh.write(json.dumps({"phase": "train_done", "wall": time.time()}) + "\n")
        fh.write(json.dumps({"phase": "predict_done", "wall": time.time()}) + "\n")
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    seconds = float(globals().get("HOSTILE_CONFIG", {}).get("seconds", 100))
    end = time.monotonic() + seconds
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    while time.monotonic() < end:
        for images, targets in data.loader(64):
            loss = F.cross_entropy(model(images), targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if time.monotonic() >= end:
                break
    return model
