"""train() without the ctx argument: the static check must catch it."""

import torch


def train(model, data):
    return model
