"""Ignores ctx.should_stop() but is interruptible: trains forever, checkpointing
every step; the harness interrupts it and predicts with the checkpoint."""

LR = 0.05          # SGD learning rate
BATCH_SIZE = 32    # images per step

import torch
import torch.nn.functional as F


def train(model, data, ctx):
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    model.train()
    if ctx.preflight:
        return model
    while True:
        for images, targets in data.loader(BATCH_SIZE):
            loss = F.cross_entropy(model(images), targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
            ctx.checkpoint(model)
