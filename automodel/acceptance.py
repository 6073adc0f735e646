"""When an edit counts as an improvement: more than `min_delta`, and more than chance.

Two pipelines scored on the same validation images disagree on a few of them:
the edit gets `gained` images right that the best got wrong, and loses `lost`
that the best got right. If the edit changed nothing real, which of the two
wins each disputed image is a coin flip, so gained - lost has a standard
deviation of sqrt(gained + lost) (McNemar's sign test). An edit is kept only
when gained - lost exceeds `min_z` of those standard deviations as well as
`min_delta`. On a few hundred validation images this stops edits that win by
one or two lucky images from replacing the best (measured on Fashion-MNIST,
400 validation images: such edits lowered the test accuracy of best/), while
large gains, and small ones on large validation sets, still get through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

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
    new_ok = new.argmax(1) == labels
    old_ok = old.argmax(1) == labels
    return Evidence(gained=int((new_ok & ~old_ok).sum()), lost=int((~new_ok & old_ok).sum()))


def is_improvement(val: float, best_val: float, min_delta: float, evidence: Evidence | None, min_z: float) -> bool:
    """The keep rule. Without evidence (predictions missing) only min_delta applies."""
    if val <= best_val + min_delta:
        return False
    return evidence is None or min_z <= 0 or evidence.z > min_z
