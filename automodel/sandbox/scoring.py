"""Trusted scoring: accuracy from the predictions a sandboxed child wrote.

Runs in the parent only. The child is untrusted, so its files are read with
care: no symlinks followed (a link could point the parent at any host file),
no pickles, a size cap, and the array must be exactly (N, num_classes) finite
floats for the N images the parent handed out. Nothing the child printed or
claimed is used: the labels never left this process.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from automodel import files

MAX_FILE_BYTES = 2 * 2**30   # a prediction file larger than this is refused


class ScoringError(Exception):
    """A prediction file is missing or malformed; the message says which and how."""


def read_untrusted(path: Path, max_bytes: int = MAX_FILE_BYTES, truncate: bool = False) -> bytes:
    """Bytes of a regular file written by the child (automodel.files.read_untrusted), as a ScoringError."""
    try:
        return files.read_untrusted(path, max_bytes, truncate)
    except files.UntrustedFileError as err:
        missing = " The pipeline did not produce predictions for this split." if not Path(path).exists() else ""
        raise ScoringError(f"{err}{missing}") from None


def load_probs(path: Path, num_rows: int, num_classes: int) -> np.ndarray:
    """The (num_rows, num_classes) float array in `path`, validated."""
    raw = read_untrusted(path)
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - any parse failure is the child's fault
        raise ScoringError(f"{path.name} is not a readable .npy array ({type(err).__name__}: {err}).") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise ScoringError(
            f"{path.name} holds {getattr(arr, 'dtype', type(arr).__name__)} data; expected float probabilities."
        )
    if arr.shape != (num_rows, num_classes):
        raise ScoringError(
            f"{path.name} has shape {arr.shape}; expected ({num_rows}, {num_classes}) = (images in the split, classes)."
        )
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ScoringError(
            f"{path.name} contains NaN or inf in {bad} of {num_rows} rows: the model diverged or produced "
            "non-finite logits."
        )
    return arr


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    if len(labels) == 0:
        raise ScoringError("there are no labelled images to score.")
    return float((probs.argmax(axis=1) == np.asarray(labels)).mean())


def score_file(path: Path, labels: np.ndarray, num_classes: int) -> float:
    """Accuracy of the predictions in `path` against `labels` (kept by the parent)."""
    return accuracy(load_probs(path, len(labels), num_classes), labels)
