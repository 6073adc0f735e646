"""Every bad input gives a DatasetError through the real CLI: a clear message, exit code 3, no traceback."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from automodel.errors import DatasetError


@pytest.fixture(scope="module")
def digit_pixels() -> np.ndarray:
    datasets = importlib.import_module("sklearn.datasets")
    return (datasets.load_digits().images * 15).astype(np.uint8)


def write_pngs(folder: Path, pixels: np.ndarray, n: int, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        path = folder / f"img_{i:04d}.png"
        Image.fromarray(pixels[i], "L").save(path)
        paths.append(path)
    return paths


def assert_dataset_error(proc, *fragments: str) -> str:
    assert proc.returncode == DatasetError.exit_code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip()
    assert message.startswith("automodel: error: ")
    assert "\n" not in message, "the message must be one paragraph"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message}"
    return message


def test_missing_folder(cli, tmp_path):
    missing = tmp_path / "no_such_dataset"
    assert_dataset_error(cli("inspect", missing), str(missing), "does not exist")


def test_path_is_a_file(cli, tmp_path, digit_pixels):
    (png,) = write_pngs(tmp_path, digit_pixels, 1)
    assert_dataset_error(cli("inspect", png), str(png), "is a file, not a dataset folder")
    csv = tmp_path / "labels.csv"
    csv.write_text("filename,label\nimg_0000.png,a\n")
    assert_dataset_error(cli("inspect", csv), "CSV", "pass the folder that contains it")


def test_empty_folder(cli, tmp_path):
    empty = tmp_path / "empty"
    (empty / "cats").mkdir(parents=True)
    (empty / "notes.txt").write_text("nothing here yet")
    (empty / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    assert_dataset_error(cli("inspect", empty), str(empty), "contains no images")


def test_unlabelled_images_only(cli, tmp_path, digit_pixels):
    write_pngs(tmp_path / "ds", digit_pixels, 6)
    assert_dataset_error(cli("inspect", tmp_path / "ds"), "6 images but no labels", "labels.csv")


def test_one_class_only(cli, tmp_path, digit_pixels):
    write_pngs(tmp_path / "flat" / "cats", digit_pixels, 5)
    assert_dataset_error(cli("inspect", tmp_path / "flat"), "only one class folder (cats/)", "at least two classes")
    (tmp_path / "csvds").mkdir()
    write_pngs(tmp_path / "csvds" / "images", digit_pixels, 4)
    rows = "".join(f"img_{i:04d}.png,cat\n" for i in range(4))
    (tmp_path / "csvds" / "labels.csv").write_text("filename,label\n" + rows)
    assert_dataset_error(cli("inspect", tmp_path / "csvds"), "only the class 'cat'", "labels.csv")


def test_class_too_small_to_split(cli, tmp_path, digit_pixels):
    write_pngs(tmp_path / "flat" / "big", digit_pixels, 10)
    write_pngs(tmp_path / "flat" / "tiny", digit_pixels, 2, start=10)
    assert_dataset_error(cli("inspect", tmp_path / "flat"), "Class 'tiny' has only 2", "at least 3",
                         "training, validation, test")
    # With a provided test/ only validation is carved from train/: 2 per class suffice, 1 does not.
    root = tmp_path / "folders"
    write_pngs(root / "train" / "a", digit_pixels, 5)
    write_pngs(root / "train" / "b", digit_pixels, 1, start=5)
    write_pngs(root / "test" / "a", digit_pixels, 2, start=6)
    write_pngs(root / "test" / "b", digit_pixels, 2, start=8)
    assert_dataset_error(cli("inspect", root), "Class 'b' has only 1", "at least 2")
    write_pngs(root / "train" / "b", digit_pixels, 1, start=20)
    assert cli("inspect", root).returncode == 0


def test_csv_names_missing_files(cli, tmp_path, digit_pixels):
    root = tmp_path / "kaggle"
    write_pngs(root / "images", digit_pixels, 6)
    rows = [f"img_{i:04d}.png,{'ab'[i % 2]}" for i in range(6)] + ["ghost_1.png,a", "ghost_2.png,b", "ghost_3,b"]
    (root / "labels.csv").write_text("filename,label\n" + "\n".join(rows) + "\n")
    assert_dataset_error(cli("inspect", root), "labels.csv", "names 3 image file(s) that do not exist",
                         "'ghost_1.png'", "'ghost_3'")


def test_csv_without_label_column(cli, tmp_path, digit_pixels):
    root = tmp_path / "kaggle"
    write_pngs(root / "images", digit_pixels, 4)
    rows = "".join(f"img_{i:04d}.png,8,8\n" for i in range(4))
    (root / "train.csv").write_text("image_path,width,height\n" + rows)
    assert_dataset_error(cli("inspect", root), "train.csv", "no label column", "image_path,width,height")


def test_only_unreadable_files(cli, tmp_path):
    root = tmp_path / "broken"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        (root / cls / "one.jpg").write_text("<html>404 not found</html>")
        (root / cls / "two.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    assert_dataset_error(cli("inspect", root), "None of the 4 image files", "could be read", "a/one.jpg")


def test_bad_input_from_cli_main_returns_exit_code(tmp_path, capsys):
    from automodel.cli import main

    assert main(["inspect", str(tmp_path / "missing")]) == DatasetError.exit_code
    assert "does not exist" in capsys.readouterr().err
