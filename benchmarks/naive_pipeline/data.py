"""data.py of the naive baseline: what a first-try, zero-shot script typically does.

No augmentation: every image is resized to a fixed square (photos are shrunk,
small images are kept), scaled to [0, 1] and normalised with the training
split's mean and std. Written by hand for benchmarks/cpu_suite.py, following
interfaces/data.py.
"""

MAX_SIZE = 64  # px: images larger than this are resized to MAX_SIZE x MAX_SIZE; smaller ones keep their size

import numpy as np
import torch
import torch.nn.functional as F


def build_transforms(info):
    height, width = info.image_size
    size = None if max(height, width) <= MAX_SIZE else MAX_SIZE
    mean = torch.tensor([float(m) for m in info.mean][: info.channels]).view(-1, 1, 1)
    std = torch.tensor([max(float(s), 1e-3) for s in info.std][: info.channels]).view(-1, 1, 1)

    def transform(img: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
        if size is not None:
            t = F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
        return (t - mean) / std

    # The same transform for training and evaluation: no augmentation at all.
    return transform, transform
