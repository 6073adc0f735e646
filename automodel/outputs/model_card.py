"""MODEL_CARD.md: what the best model was trained on, how, how well, and where it stops.

Rendered from templates/report/model_card.md.j2 with the report's figures
(see report.context) plus a few numbers only a card needs: a confidence
interval for the test accuracy, the weakest classes, the most frequent
confusions, and the sandbox protections that were missing during training.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from automodel.files import atomic_write_text
from automodel.outputs.render import environment

MODEL_CARD = "MODEL_CARD.md"
WEAKEST = 3          # classes listed as the weakest
CONFUSIONS = 5       # most frequent (true, predicted) pairs listed


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion: honest for small test sets and near 0 or 1."""
    if n <= 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def card_facts(data) -> dict[str, Any]:
    """Numbers the card adds to the report's context."""
    facts: dict[str, Any] = {"interval": None, "weakest": [], "confusions": [], "missing_protections": []}
    ev = data.evaluation
    if ev is not None:
        n = int(len(ev.labels))
        correct = int((ev.predicted == ev.labels).sum())
        facts["interval"] = wilson_interval(correct, n)
        rows = [r for r in ev.per_class() if r["accuracy"] is not None]
        facts["weakest"] = sorted(rows, key=lambda r: (r["accuracy"], r["class"]))[:WEAKEST]
        matrix = ev.confusion()
        pairs = [(int(matrix[i, j]), ev.classes[i], ev.classes[j]) for i in range(len(ev.classes))
                 for j in range(len(ev.classes)) if i != j and matrix[i, j]]
        facts["confusions"] = [
            {"count": c, "true": t, "predicted": p}
            for c, t, p in sorted(pairs, key=lambda x: (-x[0], x[1], x[2]))[:CONFUSIONS]
        ]
    sandbox = data.best_metrics.get("sandbox") or {}
    facts["sandbox"] = sandbox.get("kind")
    facts["missing_protections"] = list(sandbox.get("missing") or [])
    model_hparams = (data.summary.get("model") or {}).get("hparams") or {}
    facts["pretrained"] = model_hparams.get("PRETRAINED")  # a timm name, or None: trained from scratch
    return facts


def write_model_card(data, context: dict[str, Any]) -> Path:
    """Render MODEL_CARD.md into the run directory and return its path."""
    text = environment().get_template("model_card.md.j2").render(**context, card=card_facts(data))
    path = Path(data.run) / MODEL_CARD
    atomic_write_text(path, text)
    return path
