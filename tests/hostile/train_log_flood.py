"""Prints HOSTILE_CONFIG["mb"] MB (2,500 by default) to stdout and as much to
stderr, then trains honestly. Each log must stay near its cap, keeping its head
and its tail, and the record must say it was cut."""

import sys

import torch
import torch.nn.functional as F


def train(model, data, ctx):
    if not ctx.preflight:
        megabytes = int(globals().get("HOSTILE_CONFIG", {}).get("mb", 2500))
        line = ("x" * 1023 + "\n")
        print("FIRST LINE OF THE FLOOD", flush=True)
        for _ in range(megabytes * 1024):
            sys.stdout.write(line)
            sys.stderr.write(line)
        print("LAST LINE OF THE FLOOD", flush=True)
        print("LAST LINE OF THE FLOOD", file=sys.stderr, flush=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    while not ctx.should_stop():
        for images, targets in data.loader(64):
            if ctx.should_stop():
                break
            loss = F.cross_entropy(model(images), targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model
