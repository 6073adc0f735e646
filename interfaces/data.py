"""CONTRACT for data.py: how one decoded image becomes a tensor.

The harness has already decoded every image ONCE into a numpy uint8 array of
shape (H, W, C), where (H, W) == info.image_size and C == info.channels (1 for
grayscale data, 3 for colour). data.py only decides augmentation and
normalization. It never reads files and never sees validation or test labels.

Your module starts with ONE block of UPPER_CASE hyperparameters, each with its
unit or meaning in a comment, e.g.

    CROP_PADDING = 4        # pixels of reflect padding before a random crop
    HFLIP = True            # random horizontal flips (False for digits/text)

Required: build_transforms. Optional: mix_batch.
You may use numpy, torch, torchvision.transforms.v2 or albumentations.
"""

from typing import Callable, Tuple

import numpy as np
import torch


def build_transforms(info) -> Tuple[Callable[[np.ndarray], torch.Tensor], Callable[[np.ndarray], torch.Tensor]]:
    """Return (train_transform, eval_transform).

    Each maps ONE image, a numpy uint8 array (H, W, C), to a float32 torch
    tensor (C, H2, W2). Both must produce the same (C, H2, W2) for every image,
    and that is the input the model receives. eval_transform must be
    deterministic (it is used to predict validation, test and new images).

    `info` has: num_classes (int), class_names (list[str]), channels (1|3),
    image_size ((H, W) of the decoded arrays), mean and std (per-channel floats
    in [0, 1] measured on the training split), num_train (int).
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
