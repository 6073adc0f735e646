"""CONTRACT for model.py: the network.

Your module starts with ONE block of UPPER_CASE hyperparameters, each with its
unit or meaning in a comment (widths, depth, dropout, backbone name, ...).

Required: build_model. Optional: PRETRAINED.
You may use torch, torchvision and timm. Nothing may be downloaded at run time:
the sandbox has no network.
"""

import torch

# OPTIONAL: name of a timm model whose pretrained weights you want, e.g.
# "resnet18.a1_in1k". Trusted code puts them into the local cache before the run
# when it can; build_model must still work when they are not there (check
# info.pretrained_available and fall back to pretrained=False).
PRETRAINED = None


def build_model(info) -> torch.nn.Module:
    """Return a torch.nn.Module mapping a float32 batch (B, C, H2, W2), exactly
    as produced by data.py's transforms, to logits (B, info.num_classes).

    `info` has: num_classes, class_names, channels, image_size, mean, std,
    num_train, device ("cpu" or "cuda"), pretrained_available (bool: whether
    the weights named by PRETRAINED are in the local cache).
    The model must not apply softmax; the harness does that for predictions.
    """
    raise NotImplementedError
