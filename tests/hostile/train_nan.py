"""Passes the preflight, then returns a model whose every weight is NaN."""

import torch


def train(model, data, ctx):
    if not ctx.preflight:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
    return model
