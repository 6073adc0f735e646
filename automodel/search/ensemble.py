"""Greedy ensemble selection (Caruana et al., 2004) over validation probabilities.

Start from nothing; at each step add, with replacement, the candidate whose
addition gives the most accurate average (log-loss breaks ties); keep the best
prefix. Candidates added several times weigh more. The result is used only
when it beats the best single candidate by more than noise, on the same
validation images, by paired evidence (automodel.search.acceptance), and when
its members over-fit rather than under-fit (VARIANCE_SHARE): the final phase
splits its time between the members, so the choice must hold at equal compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from automodel.search.acceptance import Evidence, compare_correct

MAX_STEPS = 6        # additions, so at most 6 distinct members (MLEvolve keeps up to 6)
ENSEMBLE_Z = 2.0     # the ensemble must win this many standard deviations of a coin-flip difference
# An ensemble is refit only when at least this share of its members' validation errors is generalisation gap
# (train accuracy above validation). Averaging models removes variance, not bias: members that are still
# under-fit (train ~ val) gain more from one run with k times the time than from k runs sharing it.
# Measured on the shared sets at 20 s per candidate: CIFAR-10 -0.06..0.06 (time-limited; a 4-member ensemble
# refit for 82 s each scored 0.773 where one refit for 351 s scored 0.794), Fashion-MNIST 0.09..0.17,
# MNIST 0.37..0.87.
VARIANCE_SHARE = 0.25


@dataclass(frozen=True)
class Selection:
    picks: tuple[int, ...]        # indices into the candidates, with repetition (the weights)
    accuracy: float               # validation accuracy of the averaged probabilities
    best_single: int              # index of the most accurate single candidate
    best_single_accuracy: float
    evidence: Evidence            # the ensemble against the best single candidate, image by image

    @property
    def members(self) -> list[int]:
        """Distinct candidate indices in order of first pick."""
        return list(dict.fromkeys(self.picks))

    def weights(self) -> list[int]:
        return [self.picks.count(i) for i in self.members]

    def beats_single(self, min_delta: float) -> bool:
        return (len(self.members) >= 2 and self.accuracy > self.best_single_accuracy + min_delta
                and self.evidence.z >= ENSEMBLE_Z)


def variance_share(pairs: list[tuple[float | None, float | None]]) -> float | None:
    """The mean over members of (train accuracy - validation accuracy) / validation error: the share of
    the errors that is generalisation gap. None when a member lacks either figure."""
    shares = []
    for train, val in pairs:
        if train is None or val is None:
            return None
        shares.append((train - val) / max(1e-6, 1.0 - val))
    return sum(shares) / len(shares) if shares else None


def _score(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, -log-loss): larger is better in both."""
    accuracy = float((probs.argmax(1) == labels).mean())
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    return accuracy, float(np.log(picked).mean())


def select(probs: list[np.ndarray], labels: np.ndarray, max_steps: int = MAX_STEPS) -> Selection:
    """Greedy forward selection with replacement over `probs` (each (N, C), rows summing to 1)."""
    if not probs:
        raise ValueError("no candidates to ensemble")
    singles = [_score(p, labels) for p in probs]
    best_single = max(range(len(probs)), key=lambda i: singles[i])
    total = np.zeros_like(probs[0], dtype=np.float64)
    picks: list[int] = []
    best_picks, best_score = [best_single], singles[best_single]
    for _ in range(max_steps):
        scores = [_score((total + p) / (len(picks) + 1), labels) for p in probs]
        i = max(range(len(probs)), key=lambda j: scores[j])
        picks.append(i)
        total += probs[i]
        if scores[i] > best_score:
            best_picks, best_score = list(picks), scores[i]
    averaged = sum(probs[i] for i in best_picks) / len(best_picks)
    evidence = compare_correct(averaged.argmax(1) == labels, probs[best_single].argmax(1) == labels)
    return Selection(tuple(best_picks), best_score[0], best_single, singles[best_single][0], evidence)
