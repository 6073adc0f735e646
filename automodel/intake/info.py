"""DataInfo: the facts about the data that generated code receives (see interfaces/)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

_CHUNK_PIXELS = 8_000_000  # values per chunk: bounds memory on big memory-mapped arrays


# A background is plain when this share of the frame pixels lies within BACKGROUND_TOLERANCE levels of
# their median, in every channel. Measured shares: MNIST 1.0, Fashion-MNIST 0.88; CIFAR-10 0.15-0.18 and
# hymenoptera 0.13-0.16 per channel.
BACKGROUND_SHARE = 0.75
BACKGROUND_TOLERANCE = 16


def data_info(ds, images, train_indices: Sequence[int]) -> dict[str, Any]:
    """{num_classes, class_names, channels, image_size [H, W], mean, std, num_train, background}.

    mean/std are per channel in [0, 1], measured exactly on the training images
    (via per-channel histograms, so a memory-mapped array is read in chunks).
    """
    arr = images.array
    channels = int(images.channels)
    idx = np.sort(np.asarray(train_indices, dtype=np.int64))
    hist = np.zeros((channels, 256), dtype=np.int64)
    frame = np.zeros((channels, 256), dtype=np.int64)  # the outermost pixels of each image
    per_image = max(1, int(np.prod(arr.shape[1:])))
    step = max(1, _CHUNK_PIXELS // per_image)
    for start in range(0, len(idx), step):
        chunk = np.asarray(arr[idx[start:start + step]])
        for c in range(channels):
            hist[c] += np.bincount(chunk[..., c].ravel(), minlength=256)
            edges = (chunk[:, 0, :, c], chunk[:, -1, :, c], chunk[:, 1:-1, 0, c], chunk[:, 1:-1, -1, c])
            frame[c] += np.bincount(np.concatenate([e.ravel() for e in edges]), minlength=256)
    values = np.arange(256, dtype=np.float64) / 255.0
    total = hist.sum(axis=1).clip(min=1)
    mean = (hist * values).sum(axis=1) / total
    var = (hist * values**2).sum(axis=1) / total - mean**2
    std = np.sqrt(np.clip(var, 0.0, None))
    return {
        "num_classes": len(ds.classes),
        "class_names": list(ds.classes),
        "channels": channels,
        "image_size": [int(images.image_size[0]), int(images.image_size[1])],
        "mean": [round(float(v), 6) for v in mean],
        "std": [round(float(max(v, 1e-6)), 6) for v in std],
        "num_train": int(len(idx)),
        "background": _plain_background(frame),
    }


def _plain_background(frame: np.ndarray) -> list[int] | None:
    """The per-channel pixel value (0-255) of a plain background, or None: when nearly all the outermost
    pixels of the training images share one colour (digits and clothing on black, scans on white), a
    translation should pad with that colour; reflecting the edge would mirror the object instead."""
    if frame.sum() == 0:
        return None
    colour = []
    for counts in frame:
        median = int(np.searchsorted(np.cumsum(counts), counts.sum() / 2))
        near = counts[max(0, median - BACKGROUND_TOLERANCE):median + BACKGROUND_TOLERANCE + 1].sum()
        if near < BACKGROUND_SHARE * counts.sum():
            return None
        colour.append(median)
    return colour
