"""Leaves a directory nested DEPTH levels deep (1,500 by default) in its working
folder, then trains honestly. Recursive walks and deletes die on it
(RecursionError); the parent must delete it and `resume` must go on."""

import os

import torch
import torch.nn.functional as F


def train(model, data, ctx):
    depth = int(globals().get("HOSTILE_CONFIG", {}).get("depth", 1500))
    top = os.open(".", os.O_RDONLY)
    fd = top
    for _ in range(
        depth if not os.path.exists("d") else 0
    ):  # once: train() runs in the preflight too  # by descriptor: the path grows past PATH_MAX
        os.mkdir("d", dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
        if fd != top:
            os.close(fd)
        fd = nxt
    os.close(fd)
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
