"""The throughput probe (automodel/sandbox/child_probe.py), in-process on real images: it times every width, picks
bfloat16 only when bf16 beat float32 by the margin at the first width, and sizes in float32 either way."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from automodel.sandbox import child_probe


@pytest.fixture(scope="module")
def images(materialize):
    from PIL import Image

    root = materialize("cifar10", "imagefolder", 4)
    paths = sorted((root / "train").rglob("*.jpg"))
    x = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    y = np.array([sorted(d.name for d in (root / "train").iterdir()).index(p.parent.name) for p in paths])
    return x, y


def measure(images, **spec):
    torch.set_num_threads(2)
    return child_probe.measure(torch, np, *images, {"widths": [8, 16], "seconds": 0.05, "batch_size": 16, **spec},
                               torch.device("cpu"))


def test_bf16_is_chosen_only_when_it_beats_float32_by_the_margin(images, monkeypatch):
    monkeypatch.setattr(child_probe, "BF16_MARGIN", float("inf"))  # bf16 can never win
    slow = measure(images)
    assert slow["precision"] == "fp32" and set(slow["images_per_second"]) == {"8", "16"}
    assert slow["images_per_second"]["8"] > 0 and slow["bf16_images_per_second"]["8"] > 0  # timed, and lost

    monkeypatch.setattr(child_probe, "BF16_MARGIN", 0.0)  # bf16 always wins
    fast = measure(images)
    assert fast["precision"] == "bf16" and set(fast["bf16_images_per_second"]) == {"8"}  # the first width only
    assert set(fast["images_per_second"]) == {"8", "16"} and fast["input_size"] == 32 and fast["stages"] == 3


def test_bf16_is_not_timed_when_the_spec_says_not_to(images, monkeypatch):
    monkeypatch.setattr(child_probe, "BF16_MARGIN", 0.0)
    result = measure(images, try_bf16=False)
    assert result["precision"] == "fp32" and result["bf16_images_per_second"] == {}
