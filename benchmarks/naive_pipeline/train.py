"""train.py of the naive baseline: Adam at its default learning rate for a few epochs.

No schedule, no weight decay, no label smoothing; it stops early only when the
time budget runs out. Written by hand for benchmarks/cpu_suite.py, following
interfaces/train.py.
"""

EPOCHS = 3          # passes over the training split
BATCH_SIZE = 64     # images per step
LR = 1e-3           # Adam learning rate (constant)

import torch
import torch.nn.functional as F


def train(model, data, ctx):
    model.to(ctx.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    step = 0
    for _epoch in range(EPOCHS):
        for images, targets in data.loader(BATCH_SIZE, shuffle=True, drop_last=True):
            if ctx.should_stop():
                return model
            images, targets = images.to(ctx.device), targets.to(ctx.device)
            loss = F.cross_entropy(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % 20 == 0:
                ctx.log("train/loss", loss.item(), step)
        ctx.checkpoint(model)
    return model
