"""`automodel inspect --json` on every real dataset in every folder layout users hand us."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
from PIL import Image

from automodel.intake import load_dataset

PER_CLASS = 5
CLASSES = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": ["Ankle_boot", "Bag", "Coat", "Dress", "Pullover", "Sandal", "Shirt", "Sneaker",
                      "T-shirt_top", "Trouser"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "hymenoptera": ["ants", "bees"],
}
# What materialize.py writes per split and class: the first N per class, or all of hymenoptera.
HYMENOPTERA = {"train": {"ants": 124, "bees": 121}, "test": {"ants": 70, "bees": 83}}


def written(dataset: str) -> dict[str, dict[str, int]]:
    if dataset == "hymenoptera":
        return HYMENOPTERA
    return {s: {c: PER_CLASS for c in CLASSES[dataset]} for s in ("train", "test")}


def held(n: int, fraction: float) -> int:
    """The number a stratified hold-out takes from a class of n: rounded, at least one."""
    return max(1, int(np.floor(n * fraction + 0.5)))


@pytest.mark.parametrize("layout", ["imagefolder", "flat", "csv"])
@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist", "cifar10", "hymenoptera"])
def test_inspect_json_counts_match_what_was_written(materialize, cli, dataset, layout):
    folder = materialize(dataset, layout, None if dataset == "hymenoptera" else PER_CLASS)
    proc = cli("inspect", folder, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    src = written(dataset)
    classes = CLASSES[dataset]
    assert out["layout"] == layout
    assert out["num_classes"] == len(classes)
    assert sorted(out["classes"]) == sorted(classes)
    assert out["skipped"] == []
    prof = out["profile"]
    total = {c: src["train"][c] + src["test"][c] for c in classes}
    assert prof["class_counts"]["all"] == total
    splits, per_class = out["splits"], prof["class_counts"]
    assert splits["train"] + splits["val"] + splits["test"] == sum(total.values())
    if layout == "imagefolder":
        # The provided test/ folder is the test set; validation is carved from train/.
        assert prof["source_counts"] == src
        assert per_class["test"] == src["test"]
        assert prof["split_source"]["test"] == "provided"
        expected_val = {c: held(n, 0.2) for c, n in src["train"].items()}
    else:
        assert prof["source_counts"] == {"all": total}
        expected_test = {c: held(n, 0.2) for c, n in total.items()}
        assert per_class["test"] == expected_test
        expected_val = {c: held(total[c] - expected_test[c], 0.2) for c in classes}
    assert per_class["val"] == expected_val
    assert all(per_class["train"][c] + per_class["val"][c] + per_class["test"][c] == total[c] for c in classes)


def test_sklearn_digits_as_png_folders(tmp_path, cli):
    datasets = importlib.import_module("sklearn.datasets")
    digits = datasets.load_digits()
    pixels = (digits.images * 15).astype(np.uint8)  # 0..16 -> 0..240, 8x8 grayscale
    for i, (img, y) in enumerate(zip(pixels, digits.target)):
        folder = tmp_path / "digits" / f"digit_{y}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(folder / f"{i:04d}.png")
    proc = cli("inspect", tmp_path / "digits", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    counts = np.bincount(digits.target)
    assert out["layout"] == "flat"
    assert out["profile"]["class_counts"]["all"] == {f"digit_{d}": int(n) for d, n in enumerate(counts)}
    assert out["profile"]["working"] == {"image_size": [8, 8], "channels": 1}

    # The decoded array holds exactly the written pixels, row for row with ds.items.
    ds = load_dataset(tmp_path / "digits", progress=False)
    images = ds.decode(progress=False)
    assert images.array.shape == (len(digits.target), 8, 8, 1)
    for k in (0, 500, len(ds.items) - 1):
        source = int(ds.items[k].path.stem)
        assert ds.classes[ds.items[k].label] == f"digit_{digits.target[source]}"
        np.testing.assert_array_equal(images.array[k, :, :, 0], pixels[source])


def test_hymenoptera_gif_and_jpeg_are_read(shared_dir, tmp_path):
    root = shared_dir / "datasets" / "hymenoptera_data"
    ds = load_dataset(root, cache_dir=tmp_path, progress=False)
    relpaths = {it.relpath: it for it in ds.items}
    assert ds.layout == "imagefolder"
    assert ds.skipped == []
    for rel in ("train/ants/imageNotFound.gif", "train/ants/formica.jpeg"):
        assert rel in relpaths, f"{rel} was not read"
        assert ds.classes[relpaths[rel].label] == "ants"
    # val/ is the original's validation folder: kept as val, and test is held out from train.
    split = ds.split()
    assert len(split.val) == 153 and split.provided == ("val",)
    assert len(split.test) == held(124, 0.2) + held(121, 0.2)
    profile = ds.profile()
    assert profile["formats"].get("GIF") == 1
    assert profile["modes"].get("P") == 1
    assert profile["image_size"]["width"]["max"] == 2592


def test_lone_wrapper_folder_is_stepped_into(tmp_path, materialize):
    import shutil

    outer = tmp_path / "download"
    shutil.copytree(materialize("mnist", "imagefolder", 3), outer / "mnist_png")
    (outer / "README.md").write_text("Handwritten digits, 28x28.")
    ds = load_dataset(outer, progress=False)
    assert ds.layout == "imagefolder" and ds.root == (outer / "mnist_png").resolve()
    assert len(ds.items) == 60 and ds.description == "Handwritten digits, 28x28."
