"""Kaggle-style labels CSVs with the quirks real dumps have."""

from __future__ import annotations

import csv
import shutil

import pytest

from automodel.intake import load_dataset


@pytest.fixture
def kaggle(tmp_path, materialize):
    """A writable copy of MNIST in the csv layout, plus its rows [(filename, label)]."""
    src = materialize("mnist", "csv", 4)
    root = tmp_path / "ds"
    shutil.copytree(src / "images", root / "images")
    with open(src / "labels.csv", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    return root, rows


def counts(ds):
    out = {}
    for it in ds.items:
        out[ds.classes[it.label]] = out.get(ds.classes[it.label], 0) + 1
    return out


def test_crlf_bom_blank_lines_ids_without_extension_and_odd_headers(kaggle):
    root, rows = kaggle
    body = "\r\n".join(f"{name.rsplit('.', 1)[0]},digit {label}" for name, label in rows)
    text = "\ufeffImage_ID , Category\r\n" + body + "\r\n\r\n"
    (root / "train.csv").write_bytes(text.encode("utf-8"))
    ds = load_dataset(root, progress=False)
    assert ds.layout == "csv" and ds.skipped == []
    assert ds.notes["file_column"].strip() == "Image_ID" and ds.notes["label_column"].strip() == "Category"
    assert len(ds.items) == len(rows) == 80
    assert counts(ds) == {f"digit {d}": 8 for d in range(10)}
    by_rel = {it.relpath: ds.classes[it.label] for it in ds.items}
    name, label = rows[17]
    assert by_rel[f"images/{name}"] == f"digit {label}"


def test_semicolons_relative_paths_and_other_header_names(kaggle):
    root, rows = kaggle
    lines = ["File Path;Target"] + [f"./images/{name};{label}" for name, label in rows]
    (root / "annotations.csv").write_text("\n".join(lines) + "\n")
    ds = load_dataset(root, progress=False)
    assert len(ds.items) == 80 and ds.classes == [str(d) for d in range(10)]
    assert all(it.relpath.startswith("images/") for it in ds.items)


def test_headerless_csv(kaggle):
    root, rows = kaggle
    (root / "labels.csv").write_text("".join(f"{name},{label}\n" for name, label in rows))
    ds = load_dataset(root, progress=False)
    assert len(ds.items) == 80 and len(ds.classes) == 10


def test_kaggle_competition_folder(kaggle):
    """train.csv (id,has_x) + train/ + unlabelled test/ + sample_submission.csv."""
    root, rows = kaggle
    (root / "images").rename(root / "train")
    test_dir = root / "test"
    test_dir.mkdir()
    for name, _ in rows[:6]:  # unlabelled copies under the same names: must not confuse train rows
        shutil.copy(root / "train" / name, test_dir / name)
    body = "".join(f"{name.rsplit('.', 1)[0]},{int(label) % 2}\n" for name, label in rows)
    (root / "train.csv").write_text("id,has_odd_digit\n" + body)
    (root / "sample_submission.csv").write_text("id,label\n" + "".join(f"{n},0\n" for n, _ in rows[:6]))
    ds = load_dataset(root, progress=False)
    assert ds.layout == "csv" and ds.classes == ["0", "1"]
    assert ds.notes["label_column"] == "has_odd_digit"
    labelled = [it for it in ds.items if it.label is not None]
    predict = [it for it in ds.items if it.split == "predict"]
    assert len(labelled) == 80 and all(it.relpath.startswith("train/") for it in labelled)
    assert len(predict) == 6 and all(it.relpath.startswith("test/") for it in predict)
    assert len(ds.split().predict) == 6


def test_rows_listing_one_file_twice_with_different_labels_are_skipped(kaggle):
    root, rows = kaggle
    lines = (
        ["filename,label"]
        + [f"{n},{lab}" for n, lab in rows]
        + [f"{rows[0][0]},9" if rows[0][1] != "9" else f"{rows[0][0]},8"]
    )
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    ds = load_dataset(root, progress=False)
    assert len(ds.items) == 79
    assert ds.skipped[0]["path"] == f"images/{rows[0][0]}" and "different labels" in ds.skipped[0]["reason"]


def test_unrelated_csv_next_to_class_folders_is_ignored(tmp_path, materialize):
    root = tmp_path / "flat"
    shutil.copytree(materialize("mnist", "flat", 3), root)
    (root / "results.csv").write_text("name,score\nrun_1,0.91\nrun_2,0.93\n")
    ds = load_dataset(root, progress=False)
    assert ds.layout == "flat" and len(ds.items) == 60


def test_split_column_is_kept(kaggle):
    root, rows = kaggle
    # Per class: the first 2 rows are test, the next 2 validation, the rest training.
    seen: dict[str, int] = {}
    lines = ["filename,label,split"]
    for name, label in rows:
        k = seen[label] = seen.get(label, 0) + 1
        lines.append(f"{name},{label},{'test' if k <= 2 else 'valid' if k <= 4 else 'train'}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    ds = load_dataset(root, progress=False)
    s = ds.split()
    assert s.provided == ("val", "test")
    assert (len(s.train), len(s.val), len(s.test)) == (40, 20, 20)
