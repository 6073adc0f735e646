"""Splits: provided ones kept, the rest stratified and seeded; recorded as relpaths and reproduced."""

from __future__ import annotations

import importlib
import json
import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from automodel.errors import DatasetError
from automodel.intake import Split, load_dataset


@pytest.fixture(scope="module")
def digits():
    datasets = importlib.import_module("sklearn.datasets")
    d = datasets.load_digits()
    return (d.images * 15).astype(np.uint8), d.target


def write(folder, pixels, indices):
    folder.mkdir(parents=True, exist_ok=True)
    for i in indices:
        Image.fromarray(pixels[i], "L").save(folder / f"{i:04d}.png")


def per_class(ds, indices):
    return Counter(ds.classes[ds.items[i].label] for i in indices)


def test_split_is_deterministic_stratified_and_complete(materialize):
    folder = materialize("mnist", "flat", 12)
    ds = load_dataset(folder, progress=False)
    a, b = ds.split(seed=0), load_dataset(folder, progress=False).split(seed=0)
    assert (a.train, a.val, a.test) == (b.train, b.val, b.test)
    c = ds.split(seed=1)
    assert c.test != a.test and sorted(c.train + c.val + c.test) == sorted(a.train + a.val + a.test)
    labelled = {i for i, it in enumerate(ds.items) if it.label is not None}
    assert set(a.train) | set(a.val) | set(a.test) == labelled
    assert not (set(a.train) & set(a.val) or set(a.train) & set(a.test) or set(a.val) & set(a.test))
    # 24 per class: 5 held out for test (24 * 0.2 rounded), then 4 of the remaining 19 for validation.
    assert per_class(ds, a.test) == {c: 5 for c in ds.classes}
    assert per_class(ds, a.val) == {c: 4 for c in ds.classes}
    assert per_class(ds, a.train) == {c: 15 for c in ds.classes}
    # The test set does not depend on val_fraction: changing one knob leaves the other split alone.
    assert ds.split(seed=0, val_fraction=0.3).test == a.test
    half = ds.split(seed=0, test_fraction=0.5)
    assert per_class(ds, half.test) == {c: 12 for c in ds.classes}


def test_provided_val_and_test_are_kept_and_names_are_case_insensitive(tmp_path, digits):
    pixels, target = digits
    root = tmp_path / "ds"
    for split, name in (("train", "Train"), ("val", "VALID"), ("test", "Test")):
        for d in (0, 1, 2):
            idx = np.flatnonzero(target == d)
            chosen = {"train": idx[:10], "val": idx[10:13], "test": idx[13:17]}[split]
            write(root / name / str(d), pixels, chosen)
    ds = load_dataset(root, progress=False)
    assert ds.layout == "imagefolder"
    s = ds.split(seed=3)
    assert s.provided == ("val", "test")
    assert {ds.items[i].split for i in s.val} == {"val"} and len(s.val) == 9
    assert {ds.items[i].split for i in s.test} == {"test"} and len(s.test) == 12
    assert len(s.train) == 30 and s.predict == []
    assert all(ds.items[i].relpath.startswith("Train/") for i in s.train)


def test_unlabelled_test_folder_is_the_predict_set(tmp_path, digits, cli):
    pixels, target = digits
    root = tmp_path / "kaggle_like"
    for d in (3, 4):
        write(root / "train" / f"class_{d}", pixels, np.flatnonzero(target == d)[:8])
    write(root / "test", pixels, range(1000, 1007))  # images directly in test/: no labels
    ds = load_dataset(root, progress=False)
    s = ds.split()
    assert len(s.predict) == 7 and all(ds.items[i].label is None for i in s.predict)
    assert {ds.items[i].split for i in s.predict} == {"predict"}
    # Without a labelled test set, a test set is held out of train/ (stratified).
    assert per_class(ds, s.test) == {"class_3": 2, "class_4": 2}
    out = json.loads(cli("inspect", root, "--json").stdout)
    assert out["splits"] == {"train": 10, "val": 2, "test": 4, "predict": 7}


def test_split_json_round_trip_and_changed_dataset(tmp_path, materialize):
    folder = tmp_path / "copy"
    shutil.copytree(materialize("fashion-mnist", "imagefolder", 5), folder)
    ds = load_dataset(folder, progress=False)
    s = ds.split(seed=7)
    recorded = json.loads(json.dumps(s.to_json()))
    assert recorded["seed"] == 7 and recorded["provided"] == ["test"]
    assert set(recorded["test"]) == {ds.items[i].relpath for i in s.test}
    again = Split.from_json(recorded, load_dataset(folder, progress=False))
    assert (again.train, again.val, again.test, again.predict) == (s.train, s.val, s.test, s.predict)
    assert Split.from_json(json.dumps(recorded), ds).val == s.val

    (folder / recorded["val"][0]).unlink()
    with pytest.raises(DatasetError, match="no longer readable"):
        Split.from_json(recorded, load_dataset(folder, progress=False))
