"""Decode every image once into one uint8 (N, H, W, C) array, cached on disk.

Workers write their chunks straight into a memory-mapped .npy next to its
final place; the file is renamed into place only when complete, so readers
never see a partial array. Later loads are an np.load(mmap_mode="r").
"""

from __future__ import annotations

import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from automodel.errors import DatasetError
from automodel.intake import cache
from automodel.intake.images import GRAYSCALE_MODES, decode
from automodel.intake.parallel import ProgressLine, chunked, run_chunks, use_pool, worker_count

KEEP_SIZE_UP_TO = 64      # px: a dataset of one size this small is used as is (MNIST, CIFAR)
MIN_SIDE, MAX_SIDE = 32, 128  # px: clamp of the square working size otherwise


@dataclass(frozen=True)
class DecodedImages:
    array: np.ndarray             # uint8 (N, H, W, C), aligned with ds.items (often a read-only memmap)
    image_size: tuple[int, int]   # (H, W)
    channels: int                 # 1 or 3
    cache_path: Path | None = None  # the .npy it was loaded from (None when not cached)
    from_cache: bool = False      # True when nothing had to be decoded


def working_size(sizes: Sequence[tuple[int, int]], resolution: int | tuple[int, int] | None) -> tuple[int, int]:
    """(H, W) every image is brought to; sizes are (width, height) pairs."""
    if resolution is not None:
        if isinstance(resolution, int):
            h = w = resolution
        else:
            h, w = (int(v) for v in resolution)
        if h < 1 or w < 1:
            raise DatasetError(f"The working resolution must be positive, got {resolution!r}.")
        return (h, w)
    distinct = set(sizes)
    if len(distinct) == 1:
        (w, h), = distinct
        if max(w, h) <= KEEP_SIZE_UP_TO:
            return (h, w)
    side = int(round(statistics.median(min(w, h) for w, h in sizes)))
    side = min(MAX_SIDE, max(MIN_SIDE, side))
    return (side, side)


def working_channels(modes: Sequence[str]) -> int:
    return 1 if all(m in GRAYSCALE_MODES for m in modes) else 3


def _decode_chunk(
    npy_path: str, start: int, paths: list[str], size: tuple[int, int], channels: int
) -> list[tuple[int, str]]:
    out = np.load(npy_path, mmap_mode="r+")
    errors = []
    for k, path in enumerate(paths):
        try:
            out[start + k] = decode(path, size, channels)
        except Exception as err:  # noqa: BLE001 - reported to the parent with the file name
            errors.append((start + k, f"{type(err).__name__}: {err}"))
    out.flush()
    del out
    return errors


def decode_all(
    paths: Sequence[str], size: tuple[int, int], channels: int, cache_file: Path | None, progress: bool = True
) -> DecodedImages:
    """Load the cached array for this key, or decode every path into it (all cores)."""
    shape = (len(paths), size[0], size[1], channels)
    if cache_file is not None and cache_file.exists():
        try:
            arr = np.load(cache_file, mmap_mode="r")
            if arr.shape == shape and arr.dtype == np.uint8:
                return DecodedImages(arr, size, channels, cache_file, True)
        except (OSError, ValueError):
            pass  # damaged entry: decode again and replace it
    tmp = _temp_npy(cache_file)
    try:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        arr.flush()
        del arr
        workers = worker_count()
        ranges = chunked(len(paths), workers)
        jobs = [(str(tmp), a, list(paths[a:b]), size, channels) for a, b in ranges]
        bar = ProgressLine("decoding images", len(paths), enabled=progress)
        errors: list[tuple[int, str]] = []
        parallel = use_pool(len(paths), _total_bytes(paths), workers)
        for _, errs in run_chunks(_decode_chunk, jobs, [b - a for a, b in ranges], bar, workers, parallel):
            errors += errs
        bar.close()
        if errors:
            i, reason = min(errors)
            raise DatasetError(
                f"{paths[i]} could not be decoded ({reason}) although it was readable when the dataset was "
                f"loaded{f', and {len(errors) - 1} more' if len(errors) > 1 else ''}. The files changed while "
                f"automodel was reading them: run the command again."
            )
        if cache_file is not None and tmp.parent == cache_file.parent:
            os.replace(tmp, cache_file)
            return DecodedImages(np.load(cache_file, mmap_mode="r"), size, channels, cache_file, False)
        arr = np.load(tmp)  # no usable cache: keep the array in memory
        return DecodedImages(arr, size, channels, None, False)
    finally:
        if tmp.exists():
            tmp.unlink()


def _temp_npy(cache_file: Path | None) -> Path:
    if cache_file is not None:
        try:
            return cache.temp_sibling(cache_file)
        except OSError:
            pass
    fd, name = tempfile.mkstemp(prefix="automodel-decode-", suffix=".npy")
    os.close(fd)
    return Path(name)


def _total_bytes(paths: Sequence[str]) -> int:
    total = 0
    for p in paths:
        try:
            total += os.path.getsize(p)
        except OSError:
            pass
    return total
