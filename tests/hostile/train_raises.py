"""Crashes in the middle of training with a clear exception from a helper."""

import torch


def _normalise_targets(targets):
    raise ValueError("targets must be one-hot, got shape " + str(tuple(targets.shape)))


def train(model, data, ctx):
    for images, targets in data.loader(16):
        targets = _normalise_targets(targets)
    return model
