"""Accuracies recomputed in the test, independently of automodel's scoring code.

Labels come from the dataset folder itself (the class folder each file is in,
or the CSV's label column, as intake reads them), the split from the run's own
record of which files went where, the predictions from the .npy file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from automodel.intake import load_dataset


def labels_of(dataset: Path, relpaths: list[str]) -> np.ndarray:
    ds = load_dataset(dataset, progress=False)
    label = {item.relpath: item.label for item in ds.items}
    return np.asarray([label[r] for r in relpaths], dtype=np.int64)


def split_labels(dataset: Path, split: str, seed: int = 0) -> np.ndarray:
    ds = load_dataset(dataset, progress=False)
    return np.asarray([ds.items[i].label for i in getattr(ds.split(seed=seed), split)], dtype=np.int64)


def accuracy(probs_file: Path, labels: np.ndarray) -> float:
    probs = np.load(probs_file, allow_pickle=False)
    assert probs.shape[0] == len(labels), (probs.shape, len(labels))
    return float((probs.argmax(1) == labels).mean())


def run_accuracy(run: Path, iteration: int, split: str) -> float:
    """The accuracy of one iteration of a run on "val" or "test", from its files alone."""
    info = json.loads((run / "run.json").read_text())
    relpaths = info["split"][split]  # in the order the bundle, and so the predictions, list them
    labels = labels_of(Path(info["dataset"]["path"]), relpaths)
    return accuracy(run / f"iter_{iteration:03d}" / f"probs_{split}.npy", labels)
