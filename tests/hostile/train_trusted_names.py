"""Makes directories with the names of automodel's own files in its working
folder (metrics.json, summary.json, attempt_1, llm, events.jsonl, model.pt.tmp)
and a link out of it, then trains a few honest steps. The parent must survive
and record the iteration, and `resume` must continue the run."""

import os

import torch
import torch.nn.functional as F

NAMES = ("metrics.json", "summary.json", "attempt_1", "llm", "stdout.txt", "predict_error.json", "probs_val.npy.d")


def train(model, data, ctx):
    for name in NAMES:
        os.makedirs(os.path.join(name, "inside"), exist_ok=True)
    if not os.path.lexists("passwd-link"):
        os.symlink("/etc/passwd", "passwd-link")
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
