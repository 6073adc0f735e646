"""`automodel inspect` text output, the dataset description and the duplicate report."""

from __future__ import annotations

import json
import shutil

import pytest

from automodel.intake import load_dataset


@pytest.fixture
def hymenoptera(tmp_path, materialize):
    root = tmp_path / "bugs"
    shutil.copytree(materialize("hymenoptera", "imagefolder", 6), root)
    return root


def test_text_report(hymenoptera, cli):
    proc = cli("inspect", hymenoptera)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Layout    imagefolder" in out
    assert "Classes   2: ants, bees" in out
    assert "Images    24 usable, 0 skipped" in out
    assert "train 10, val 2 (carved 20% of the training images (stratified, seed 0)), test 12 (provided)" in out
    assert "Decoded   128x128, 3 channel(s)" in out
    assert "Description none" in out


def test_description_sources(hymenoptera, cli):
    (hymenoptera / "README.md").write_text("# Ants and bees\nPhotos from the web.\n")
    assert load_dataset(hymenoptera, progress=False).description.startswith("# Ants and bees")
    (hymenoptera / "description.txt").write_text("Insects photographed outdoors; tell ants from bees.")
    assert load_dataset(hymenoptera, progress=False).description.startswith("Insects photographed")
    out = json.loads(cli("inspect", hymenoptera, "--json", "--describe", "Ant or bee?").stdout)
    assert out["description"] == "Ant or bee?"
    assert out["profile"]["has_description"] is True


def test_duplicates_across_splits_and_with_conflicting_labels(hymenoptera, cli):
    ant = sorted((hymenoptera / "train" / "ants").iterdir())[0]
    shutil.copy(ant, hymenoptera / "test" / "ants" / "leaked_copy.jpg")   # same image in train and test
    shutil.copy(ant, hymenoptera / "train" / "bees" / "mislabelled.jpg")  # same image, other class
    out = json.loads(cli("inspect", hymenoptera, "--json").stdout)
    dup = out["profile"]["duplicates"]
    assert dup["groups"] == 1 and dup["files"] == 3
    assert dup["across_splits"] == 1 and dup["conflicting_labels"] == 1
    example = dup["examples"][0]
    assert set(example["files"]) == {
        f"train/ants/{ant.name}",
        "test/ants/leaked_copy.jpg",
        "train/bees/mislabelled.jpg",
    }
    assert "test" in example["splits"] and example["labels"] == ["ants", "bees"]
    assert "Duplicates 1 group(s)" in cli("inspect", hymenoptera).stdout
