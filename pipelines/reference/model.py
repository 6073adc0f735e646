"""Reference model.py: a small residual CNN that trains from scratch on a CPU.

Pooling comes before each stage's convolutions (cheaper than after), and the
network ends in global average pooling, so any input size works.
"""

WIDTHS = (16, 32, 64)    # channels of each stage; every stage after the first halves the resolution
BLOCKS_PER_STAGE = 1     # residual blocks (two 3x3 convs each) per stage
DROPOUT = 0.1            # dropout probability before the classifier
PRETRAINED = None        # no pretrained weights: trains from scratch offline

import torch
from torch import nn


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(width, width), _conv_bn(width, width))

    def forward(self, x):
        return x + self.body(x)


class SmallResNet(nn.Module):
    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        layers = [_conv_bn(channels, WIDTHS[0])]
        cin = WIDTHS[0]
        for i, width in enumerate(WIDTHS):
            if i > 0:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            layers.append(_conv_bn(cin, width))
            layers += [_Residual(width) for _ in range(BLOCKS_PER_STAGE)]
            cin = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(DROPOUT), nn.Linear(cin, num_classes)
        )

    def forward(self, x):
        return self.head(self.features(x))


def build_model(info) -> nn.Module:
    return SmallResNet(info.channels, info.num_classes)
