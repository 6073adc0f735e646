"""The data a sandboxed child may see, staged once per run, and the labels it may not.

    bundle = prepare_data(ds, split, images, run_dir / "data")

writes into the bundle folder:
    train_x.npy, train_y.npy   the training split with its labels (the training process only)
    val_x.npy, test_x.npy[, predict_x.npy]   images to predict, WITHOUT labels
    train_sample_x.npy         up to TRAIN_SAMPLE training images, predicted like
                               validation after training (how well the training set is fit)
    info.json                  the DataInfo given to generated code
The validation and test labels (and the sample's) stay in this process, in the
returned `DataBundle`. The prediction process gets the image files only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from automodel.files import atomic_file, atomic_write_json

BUNDLE_MARKER = "bundle.json"
TRAIN_SAMPLE = 500            # training images predicted after training, for the fit diagnostic
TRAINING_FILES = ("train_x.npy", "train_y.npy")


@dataclass(frozen=True, eq=False)
class DataBundle:
    """What prepare_data made: a folder the sandbox reads, plus the labels it must not."""

    dir: Path
    info: dict[str, Any]                # DataInfo given to generated code (info.json)
    val_y: np.ndarray                   # int64, kept in the parent only
    test_y: np.ndarray                  # int64, kept in the parent only (may be empty)
    sets: tuple[str, ...]               # image sets written for prediction, e.g. ("val", "test", "predict")
    counts: dict[str, int]              # images per set, train included
    fingerprint: str                    # dataset fingerprint + split, identifies the bundle
    source_root: Path | None = None     # the dataset folder: never mounted into the sandbox

    def images(self, name: str) -> Path:
        """The file of one prediction set ("val", "test", "predict", "train_sample")."""
        return self.dir / f"{name}_x.npy"

    def train_sample_labels(self) -> np.ndarray:
        return np.load(self.dir / "train_y.npy", mmap_mode="r")[train_sample_indices(self.counts["train"])]


def train_sample_indices(num_train: int) -> list[int]:
    """The training images predicted after training (evenly spread, at most TRAIN_SAMPLE)."""
    k = min(num_train, TRAIN_SAMPLE)
    return sorted({int(i) for i in np.linspace(0, num_train - 1, k).round()}) if k > 0 else []


def _split_lists(split) -> dict[str, list[int]]:
    return {name: [int(i) for i in (getattr(split, name, None) or [])] for name in ("train", "val", "test", "predict")}


def _labels(ds, indices: list[int]) -> np.ndarray:
    labels = [ds.items[i].label for i in indices]
    if any(label is None for label in labels):
        raise ValueError("an image in a labelled split has no label")
    return np.asarray(labels, dtype=np.int64)


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_file(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def prepare_data(ds, split, images, dest: Path, *, device: str = "cpu") -> DataBundle:
    """Write the sandbox's inputs into `dest` and return them with the held-out labels.

    A dest already prepared for the same dataset fingerprint and split, with
    all its files present, is reused (a missing file makes it stage again).
    """
    from automodel.intake import data_info

    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    lists = _split_lists(split)
    if not lists["train"] or not lists["val"]:
        raise ValueError("the split needs at least one training and one validation image")
    digest = hashlib.sha256(json.dumps([str(ds.fingerprint), lists], sort_keys=True).encode()).hexdigest()[:16]
    array = images.array
    val_y = _labels(ds, lists["val"])
    test_y = _labels(ds, lists["test"]) if lists["test"] else np.zeros(0, dtype=np.int64)
    sets = tuple(name for name in ("val", "test", "predict") if lists[name])
    counts = {name: len(lists[name]) for name in ("train", "val", "test", "predict")}
    root = Path(ds.root) if getattr(ds, "root", None) else None

    marker = dest / BUNDLE_MARKER
    files = [*TRAINING_FILES, "info.json", "train_sample_x.npy"] + [f"{name}_x.npy" for name in sets]
    if marker.is_file():
        try:
            old = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        if (
            old.get("fingerprint") == digest
            and old.get("shape") == list(array.shape[1:])
            and all((dest / f).is_file() for f in files)
        ):
            info = json.loads((dest / "info.json").read_text(encoding="utf-8"))
            if info.get("device") != device:
                info["device"] = device
                atomic_write_json(dest / "info.json", info)
            return DataBundle(dest, info, val_y, test_y, sets, counts, digest, root)

    marker.unlink(missing_ok=True)
    train = np.asarray(lists["train"])
    _save(dest / "train_x.npy", array[train])
    _save(dest / "train_y.npy", _labels(ds, lists["train"]))
    _save(dest / "train_sample_x.npy", array[train[train_sample_indices(len(train))]])
    for name in ("val", "test", "predict"):
        path = dest / f"{name}_x.npy"
        if lists[name]:
            _save(path, array[lists[name]])
        else:
            path.unlink(missing_ok=True)
    for stale in ("val_y.npy", "test_y.npy"):  # never leave labels where the sandbox looks
        (dest / stale).unlink(missing_ok=True)
    info = dict(data_info(ds, images, lists["train"]))
    info.update({"device": device, "pretrained_available": False})
    atomic_write_json(dest / "info.json", info)
    atomic_write_json(marker, {"fingerprint": digest, "shape": list(array.shape[1:]), "counts": counts})
    return DataBundle(dest, info, val_y, test_y, sets, counts, digest, root)
