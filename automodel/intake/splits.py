"""Train / validation / test / predict splits: provided ones kept, the rest carved stratified.

A labelled test/ folder is the test set; otherwise a seeded, stratified
`test_fraction` of the labelled images is held out. A val/ (valid/) folder is
the validation set; otherwise `val_fraction` of what remains for training is
carved out, stratified. Unlabelled images (e.g. loose files in test/) form the
predict set. Every carved split gets at least one image of every class.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from automodel.errors import DatasetError

SPLITS = ("train", "val", "test", "predict")


@dataclass
class Split:
    """Indices into ds.items for each split; to_json()/from_json() use relpaths so a run can be reproduced."""

    train: list[int]
    val: list[int]
    test: list[int]
    predict: list[int]
    seed: int = 0
    test_fraction: float = 0.2
    val_fraction: float = 0.2
    provided: tuple[str, ...] = ()          # splits that came from the folder layout, e.g. ("test",)
    relpaths: tuple[str, ...] = field(default=(), repr=False, compare=False)  # of all ds.items

    def counts(self) -> dict[str, int]:
        out = {"train": len(self.train), "val": len(self.val), "test": len(self.test)}
        if self.predict:
            out["predict"] = len(self.predict)
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the parameters and the relpaths of every split (record it in run.json)."""
        out: dict[str, Any] = {"seed": self.seed, "test_fraction": self.test_fraction,
                               "val_fraction": self.val_fraction, "provided": list(self.provided)}
        for name in SPLITS:
            out[name] = [self.relpaths[i] for i in getattr(self, name)]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | str, ds) -> "Split":
        """Rebuild a recorded split against `ds` (a Dataset); DatasetError if its files are gone."""
        if isinstance(data, str):
            data = json.loads(data)
        relpaths = tuple(item.relpath for item in ds.items)
        where = {rel: i for i, rel in enumerate(relpaths)}
        indices: dict[str, list[int]] = {}
        missing: list[str] = []
        for name in SPLITS:
            idx = []
            for rel in data.get(name, []):
                if rel in where:
                    idx.append(where[rel])
                else:
                    missing.append(rel)
            indices[name] = sorted(idx)
        if missing:
            examples = ", ".join(missing[:5])
            raise DatasetError(
                f"The recorded split names {len(missing)} image(s) that are no longer readable in {ds.root} "
                f"(e.g. {examples}). The dataset changed since the run was made: restore those files, or "
                f"start a new run on the dataset as it is now."
            )
        return cls(seed=int(data.get("seed", 0)), test_fraction=float(data.get("test_fraction", 0.2)),
                   val_fraction=float(data.get("val_fraction", 0.2)), provided=tuple(data.get("provided", ())),
                   relpaths=relpaths, **indices)


def required_per_class(carve_test: bool, carve_val: bool) -> int:
    return 1 + int(carve_test) + int(carve_val)


def check_class_sizes(pool_counts: dict[str, int], carve_test: bool, carve_val: bool, where: str) -> None:
    """DatasetError naming the first class too small to give every carved split one image."""
    need = required_per_class(carve_test, carve_val)
    small = [(n, c) for c, n in pool_counts.items() if n < need]
    if not small:
        return
    n, cls_name = min(small)
    parts = ["training"] + (["validation"] if carve_val else []) + (["test"] if carve_test else [])
    others = f" ({len(small) - 1} other class(es) are also too small)" if len(small) > 1 else ""
    raise DatasetError(
        f"Class '{cls_name}' has only {n} usable image(s) in {where}, but at least {need} per class are needed "
        f"to split it into {', '.join(parts)} sets{others}. Add more images of '{cls_name}', provide "
        f"{'val/ and test/' if carve_val and carve_test else 'val/' if carve_val else 'test/'} folders with "
        f"that class, or remove the class."
    )


def make_split(labels: Sequence[int | None], sources: Sequence[str | None], relpaths: Sequence[str],
               classes: Sequence[str], seed: int = 0, test_fraction: float = 0.2,
               val_fraction: float = 0.2, where: str = "the dataset") -> Split:
    """Split items given each one's label (None: unlabelled) and source split from the layout."""
    if not 0.0 <= test_fraction < 1.0 or not 0.0 <= val_fraction < 1.0:
        raise DatasetError(
            f"Split fractions must be in [0, 1): got test_fraction={test_fraction}, val_fraction={val_fraction}."
        )
    predict = [i for i, y in enumerate(labels) if y is None]
    test = [i for i, (y, s) in enumerate(zip(labels, sources)) if y is not None and s == "test"]
    val = [i for i, (y, s) in enumerate(zip(labels, sources)) if y is not None and s == "val"]
    pool = [i for i, (y, s) in enumerate(zip(labels, sources)) if y is not None and s not in ("test", "val")]
    provided = tuple(name for name, idx in (("val", val), ("test", test)) if idx)
    carve_test = not test and test_fraction > 0
    carve_val = not val and val_fraction > 0
    by_class: dict[int, list[int]] = {c: [] for c in range(len(classes))}
    for i in pool:
        by_class[labels[i]].append(i)
    check_class_sizes({classes[c]: len(idx) for c, idx in by_class.items()}, carve_test, carve_val, where)
    train: list[int] = []
    for c, idx in by_class.items():
        # One generator per class and purpose: adding a class or changing val_fraction
        # does not reshuffle the other classes' test sets.
        rest = list(idx)
        if carve_test:
            held, rest = _carve(rest, test_fraction, keep=1 + int(carve_val), seed=(seed, _key(classes[c]), 1))
            test += held
        if carve_val:
            held, rest = _carve(rest, val_fraction, keep=1, seed=(seed, _key(classes[c]), 2))
            val += held
        train += rest
    return Split(
        sorted(train),
        sorted(val),
        sorted(test),
        sorted(predict),
        seed,
        test_fraction,
        val_fraction,
        provided,
        tuple(relpaths),
    )


def stratified_holdout(labels: Sequence, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(held out, rest): `fraction` of each class's indices held out, seeded per class as `make_split`
    carves; a class with two images or more keeps at least one on each side."""
    by_class: dict[str, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(str(y), []).append(i)
    held: list[int] = []
    rest: list[int] = []
    for name, idx in by_class.items():
        if len(idx) < 2:
            rest += idx
            continue
        h, r = _carve(idx, fraction, keep=1, seed=(seed, _key(name), 1))
        held += h
        rest += r
    return sorted(held), sorted(rest)


def _key(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def _carve(idx: list[int], fraction: float, keep: int, seed: tuple[int, int, int]) -> tuple[list[int], list[int]]:
    n = len(idx)
    k = min(max(1, int(n * fraction + 0.5)), n - keep)
    order = np.random.default_rng([int(v) % 2**32 for v in seed]).permutation(n)
    chosen = set(order[:k].tolist())
    return [idx[j] for j in range(n) if j in chosen], [idx[j] for j in range(n) if j not in chosen]
