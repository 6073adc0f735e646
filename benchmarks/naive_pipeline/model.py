"""model.py of the naive baseline: two conv layers, two max-pools, two dense layers.

The textbook first CNN, trained from scratch; written by hand for
benchmarks/cpu_suite.py, following interfaces/model.py.
"""

CONV1 = 32      # channels of the first 3x3 convolution
CONV2 = 64      # channels of the second 3x3 convolution
HIDDEN = 128    # units of the hidden dense layer
MAX_SIZE = 64   # px: must match data.py (inputs larger than this were resized to it)

import torch
from torch import nn


def build_model(info) -> nn.Module:
    height, width = info.image_size
    if max(height, width) > MAX_SIZE:
        height = width = MAX_SIZE
    flat = CONV2 * (height // 4) * (width // 4)
    return nn.Sequential(
        nn.Conv2d(info.channels, CONV1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(CONV1, CONV2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(flat, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, info.num_classes),
    )
