"""When an edit counts as an improvement, and how precise a validation accuracy is.

Two pipelines scored on the same validation images disagree on a few of them:
the edit gets `gained` images right that the best got wrong, and loses `lost`
that the best got right; gained - lost is exactly its change in correct
images. If the edit changed nothing real, which of the two wins each disputed
image is a coin flip, so gained - lost has a standard deviation of
sqrt(gained + lost) (McNemar's sign test).

An edit is kept when its validation accuracy beats the best by more than
`min_delta` and, when `min_z` > 0, gained - lost exceeds `min_z` of those
standard deviations. The default is min_z = 0 because on the 400 validation
images of the benchmark subsets real gains are as hard to see as lucky ones
(measured at 45 s per iteration: on CIFAR-10 MixUp, Cutout and EMA each
raised the test accuracy by 1-2.4 points but won only 3-4 more validation
images out of ~60 disputed, z 0.3-0.5; on Fashion-MNIST nothing changed the
test accuracy by more than 0.7 points and min_z = 1 kept nothing). Kept
lucky edits cost nothing on average; rejected real ones do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Evidence:
    gained: int   # validation images the edit gets right and the best got wrong
    lost: int     # validation images the best got right and the edit gets wrong

    @property
    def z(self) -> float:
        """gained - lost in standard deviations of a coin-flip difference (0 when they agree everywhere)."""
        disputed = self.gained + self.lost
        return (self.gained - self.lost) / math.sqrt(disputed) if disputed else 0.0

    def to_json(self) -> dict[str, float | int]:
        return {"gained": self.gained, "lost": self.lost, "z": round(self.z, 2)}


def paired_evidence(candidate_probs: Path, best_probs: Path, labels: np.ndarray) -> Evidence | None:
    """Compare two iterations' saved validation predictions; None when either file is unusable."""
    try:
        new = np.load(candidate_probs, allow_pickle=False)
        old = np.load(best_probs, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if new.ndim != 2 or new.shape != old.shape or len(new) != len(labels):
        return None
    return compare_correct(new.argmax(1) == labels, old.argmax(1) == labels)


def compare_correct(new_ok: np.ndarray, old_ok: np.ndarray) -> Evidence:
    """Evidence from which images each of two predictions gets right (boolean arrays, same images)."""
    return Evidence(gained=int((new_ok & ~old_ok).sum()), lost=int((~new_ok & old_ok).sum()))


def is_improvement(val: float, best_val: float, min_delta: float, evidence: Evidence | None, min_z: float) -> bool:
    """The keep rule. Without evidence (predictions missing) only min_delta applies."""
    if val <= best_val + min_delta:
        return False
    return evidence is None or min_z <= 0 or evidence.z > min_z


def standard_error(accuracy: float | None, n: int) -> float | None:
    """One standard error of an accuracy measured on n images: how far chance alone moves it.

    With a few hundred validation images this is 1-2 points, so smaller gains
    between iterations (and the edits kept for them) may be luck of the draw."""
    if accuracy is None or n <= 0:
        return None
    p = min(max(accuracy, 1.0 / n), 1.0 - 1.0 / n) if n > 1 else 0.5  # at 0% or 100%: about one image
    return round(math.sqrt(p * (1.0 - p) / n), 4)


def noise_note(outcome: dict[str, Any]) -> str | None:
    """One plain sentence on how precise the validation scores are, for show and the end of fit."""
    n, se = outcome.get("val_images"), outcome.get("val_std_error")
    if not n or se is None:
        return None
    return (f"Validation set: {n} images, so one image is {100 / n:.2g} points and the best validation accuracy "
            f"is uncertain by about ±{100 * se:.1f} points (one standard error); smaller gains may be chance.")
