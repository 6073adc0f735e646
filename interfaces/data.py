"""CONTRACT for data.py: how decoded images become the tensors the model sees.

The harness has already decoded every image ONCE to uint8 at info.image_size
(H, W) with info.channels channels (1 for grayscale, 3 for colour), and keeps
the training split in memory (on the GPU when training there). data.py only
decides augmentation and normalization. It never reads files and never sees
validation or test labels.

Your module starts with ONE block of UPPER_CASE hyperparameters, each with its
unit or meaning in a comment, e.g.

    CROP_PADDING = 4        # pixels of padding before a random crop (random translation)
    HFLIP = True            # random horizontal flips (False for digits/text)

Define ONE of:
- build_batch_transforms (preferred, fast): transforms whole batches of uint8
  tensors with tensor operations, on the device. Use it for images up to
  about 128 px: random translations by indexing, flips with torch.where,
  normalization; no per-image Python loop.
- build_transforms (per image): one numpy image at a time, on the CPU. Use it
  only for what needs per-image code, such as albumentations on large photos.
If both are defined, the batched one is used.
Optional: mix_batch (MixUp/CutMix on the float batch).
You may use numpy, torch, torchvision.transforms.v2 or albumentations.
"""

from typing import Callable, Tuple

import numpy as np
import torch

BatchTransform = Callable[[torch.Tensor], torch.Tensor]


def build_batch_transforms(info) -> Tuple[BatchTransform, BatchTransform]:
    """Return (train_batch_transform, eval_batch_transform).

    Each maps a batch of images, a uint8 tensor (B, C, H, W) already on the
    training device, to a float32 tensor (B, C, H2, W2) on the same device.
    Both must give the same (C, H2, W2); that is the input the model receives.
    eval_batch_transform must be deterministic (it predicts validation, test
    and new images). `info` is as for build_transforms below.

    Example (random flips, then normalization):

        def build_batch_transforms(info):
            mean = torch.tensor(info.mean).view(1, -1, 1, 1) * 255
            std = torch.tensor(info.std).view(1, -1, 1, 1) * 255

            def normalize(x):
                return (x.float() - mean.to(x.device)) / std.to(x.device)

            def train_tf(x):
                flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < 0.5
                return normalize(torch.where(flip, x.flip(3), x))

            return train_tf, normalize
    """
    raise NotImplementedError


def build_transforms(info) -> Tuple[Callable[[np.ndarray], torch.Tensor], Callable[[np.ndarray], torch.Tensor]]:
    """Return (train_transform, eval_transform), one image at a time.

    Each maps ONE image, a numpy uint8 array (H, W, C), to a float32 torch
    tensor (C, H2, W2). Both must produce the same (C, H2, W2) for every image,
    and that is the input the model receives. eval_transform must be
    deterministic (it is used to predict validation, test and new images).

    `info` has: num_classes (int), class_names (list[str]), channels (1|3),
    image_size ((H, W) of the decoded arrays), mean and std (per-channel floats
    in [0, 1] measured on the training split), num_train (int), device (str),
    background (per-channel pixel values 0-255 when the images' borders share
    one plain colour, e.g. [0] for digits on black, else None: pad
    translations with it instead of reflecting the edge).
    """
    raise NotImplementedError


def mix_batch(images: torch.Tensor, targets: torch.Tensor, info) -> Tuple[torch.Tensor, torch.Tensor]:
    """OPTIONAL batch-level mixing (MixUp/CutMix), applied to every training batch.

    images: float32 (B, C, H2, W2); targets: int64 (B,) class indices.
    Return (images, targets) where targets are either int64 (B,) class indices
    or float32 (B, info.num_classes) probabilities (soft targets; rows sum to 1).
    Leave this function out entirely when no mixing is wanted.
    """
    raise NotImplementedError
