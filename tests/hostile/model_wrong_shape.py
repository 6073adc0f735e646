"""A model whose classifier has one output too many."""

WIDTH = 8   # channels

import torch
from torch import nn


def build_model(info):
    return nn.Sequential(nn.Conv2d(info.channels, WIDTH, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(WIDTH, info.num_classes + 1))
