"""The everyday bug: a fixed, huge number of epochs and no ctx.should_stop()."""

EPOCHS = 10_000   # passes over the training data
LR = 0.01         # SGD learning rate

import torch
import torch.nn.functional as F


def train(model, data, ctx):
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for epoch in range(EPOCHS):
        for images, targets in data.loader(16):
            loss = F.cross_entropy(model(images), targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model
