"""Reference data.py: light augmentation for small images, done in plain torch.

Works for grayscale and colour images of any size; large images are shrunk to
MAX_SIDE so a CPU can afford the model.
"""

MAX_SIDE = 64            # pixels: longer image side is resized down to this (never up)
CROP_PADDING = 2         # pixels of reflect padding before a random crop (0 = no crop)
HFLIP = True             # random horizontal flips (False for digits/text)
ERASE_PROB = 0.0         # probability of erasing one random square (cutout) per image
ERASE_FRACTION = 0.25    # side of the erased square, as a fraction of the image side

import numpy as np
import torch
import torch.nn.functional as F


def _target_size(info):
    h, w = info.image_size
    scale = min(1.0, MAX_SIDE / max(h, w))
    return max(8, round(h * scale)), max(8, round(w * scale))


def build_transforms(info):
    mean = torch.tensor(info.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(info.std, dtype=torch.float32).clamp_min(1e-3).view(-1, 1, 1)
    size = _target_size(info)

    def to_tensor(img: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
        if tuple(x.shape[1:]) != size:
            x = F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        return (x - mean) / std

    def eval_tf(img: np.ndarray) -> torch.Tensor:
        return to_tensor(img)

    def train_tf(img: np.ndarray) -> torch.Tensor:
        x = to_tensor(img)
        if CROP_PADDING > 0:
            h, w = x.shape[1:]
            padded = F.pad(x[None], (CROP_PADDING,) * 4, mode="reflect")[0]
            top, left = np.random.randint(0, 2 * CROP_PADDING + 1, size=2)
            x = padded[:, top:top + h, left:left + w]
        if HFLIP and np.random.rand() < 0.5:
            x = x.flip(2)
        if ERASE_PROB > 0 and np.random.rand() < ERASE_PROB:
            h, w = x.shape[1:]
            side = max(1, int(min(h, w) * ERASE_FRACTION))
            top, left = np.random.randint(0, h - side + 1), np.random.randint(0, w - side + 1)
            x = x.clone()
            x[:, top:top + side, left:left + side] = 0.0
        return x.contiguous()

    return train_tf, eval_tf
