"""Hostile dataset folders (issue 18) through the real CLI: symlink loops, missing folders, thin val/test splits.

Every dataset is real Fashion-MNIST written by the `materialize` fixture, copied before it is changed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
from test_intake_errors import assert_dataset_error

# Seconds an `inspect` of a few hundred images may take here; a symlink loop that is
# followed either hangs or takes far longer, and the subprocess timeout then fails the test.
INSPECT_TIMEOUT = 60

# A link to the parent folder (-> ..) in the folder each layout reads images from.
LOOPS = {"imagefolder": "train/Bag/loop", "flat": "Bag/loop", "csv": "images/loop"}


def copy_of(materialize, tmp_path: Path, layout: str, per_class: int = 30) -> Path:
    root = tmp_path / f"fm-{layout}"
    shutil.copytree(materialize("fashion-mnist", layout, per_class), root, symlinks=True)
    return root


def inspect_json(cli, root: Path) -> dict:
    proc = cli("inspect", root, "--json", timeout=INSPECT_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def link(root: Path, relpath: str, target: str) -> None:
    os.symlink(target, root / relpath, target_is_directory=True)


@pytest.mark.parametrize("layout", sorted(LOOPS))
def test_symlink_loop_back_up_the_tree_is_not_followed(materialize, tmp_path, cli, layout):
    root = copy_of(materialize, tmp_path, layout, per_class=10)
    before = inspect_json(cli, root)
    link(root, LOOPS[layout], "..")
    after = inspect_json(cli, root)
    # Same images, same labels: the loop adds nothing and is reported instead.
    assert after["profile"]["class_counts"] == before["profile"]["class_counts"]
    assert after["fingerprint"] == before["fingerprint"]
    (entry,) = [s for s in after["skipped"] if s["path"] == LOOPS[layout]]
    assert (
        "directory symlink loop" in entry["reason"] and "-> .." in entry["reason"] and "not followed" in entry["reason"]
    )
    assert any("not followed" in p for p in after["problems"])


def test_two_loops_in_class_folders_keep_the_counts_and_finish(materialize, tmp_path, cli):
    # The reported case: train/Bag/loop -> .. labelled 12,060 images "Bag"; a second
    # loop in train/Coat made inspect hang with its memory growing past 1.4 GB.
    root = copy_of(materialize, tmp_path, "imagefolder")
    before = inspect_json(cli, root)
    link(root, "train/Bag/loop", "..")
    link(root, "train/Coat/loop", "..")
    after = inspect_json(cli, root)
    assert after["profile"]["class_counts"]["all"] == before["profile"]["class_counts"]["all"]
    assert after["profile"]["class_counts"]["all"]["Bag"] == 60  # 30 train + 30 test
    assert {s["path"] for s in after["skipped"]} == {"train/Bag/loop", "train/Coat/loop"}
    text = cli("inspect", root, timeout=INSPECT_TIMEOUT).stdout
    assert "train/Bag/loop: directory symlink loop: train/Bag/loop -> .. leads back to train/" in text
    assert "Warning   2 folder link(s) not followed" in text


def test_linked_class_folder_is_read_once_and_a_link_to_a_sibling_is_not(materialize, tmp_path, cli):
    root = copy_of(materialize, tmp_path, "imagefolder", per_class=10)
    before = inspect_json(cli, root)
    # A class folder kept elsewhere and linked in is the normal way to assemble a dataset: it is read.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.move(root / "train" / "Bag", outside / "Bag")
    link(root, "train/Bag", str(outside / "Bag"))
    # A link from one class folder into another would label Coat images "Dress" too.
    link(root, "train/Dress/more", "../Coat")
    after = inspect_json(cli, root)
    assert after["profile"]["class_counts"] == before["profile"]["class_counts"]
    (entry,) = after["skipped"]
    assert entry["path"] == "train/Dress/more"
    assert "same folder as train/Coat/" in entry["reason"] and "not followed" in entry["reason"]


def test_fit_prints_the_problems_when_it_starts(materialize, tmp_path):
    from automodel.agents.registry import BrainConfig
    from automodel.search.loop import FitConfig
    from automodel.search.progress import Progress
    from automodel.session import start_run

    root = copy_of(materialize, tmp_path, "imagefolder", per_class=10)
    link(root, "train/Bag/loop", "..")
    stream = io.StringIO()
    run = start_run(
        root,
        tmp_path / "ws",
        "run",
        FitConfig(iters=1),
        BrainConfig(agent="expert"),
        None,
        Progress(stream=stream, quiet=True),
    )  # warnings are shown even with --quiet
    assert "automodel: warning: 1 folder link(s) not followed" in stream.getvalue()
    assert run.info["dataset"]["profile"]["problems"]


# ---- a missing dataset folder: exit 3 (DatasetError) from every command that takes one


def _command_line(command: str, dataset: Path, tmp_path: Path) -> list:
    if command == "fit":
        return ["fit", dataset, "--agent", "expert", "--workspace", tmp_path / "ws"]
    if command == "run":
        return [
            "run",
            dataset,
            "--pipeline",
            Path(__file__).parents[1] / "pipelines" / "reference",
            "--out",
            tmp_path / "out",
        ]
    if command == "resume":
        # resume checks --dataset before it reads or changes anything in the run folder.
        run = tmp_path / "run"
        run.mkdir()
        (run / "run.json").write_text("{}")
        return ["resume", run, "--dataset", dataset]
    return [command, dataset]


@pytest.mark.parametrize("command", ["inspect", "fit", "run", "resume"])
def test_missing_dataset_folder_is_exit_3_everywhere(tmp_path, cli, command):
    missing = tmp_path / "no_such_dataset"
    proc = cli(*_command_line(command, missing, tmp_path), timeout=120)
    assert_dataset_error(proc, str(missing), "does not exist", "pass the folder that holds your images")
    assert not (tmp_path / "ws").exists() and not (tmp_path / "out").exists()  # refused before any work


# ---- provided val/ and test/ splits that cannot measure much


def _move_images(src: Path, dest: Path, n: int) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.iterdir())[:n]:
        shutil.move(path, dest / path.name)


def test_val_folder_with_two_of_ten_classes_is_flagged(materialize, tmp_path, cli):
    root = copy_of(materialize, tmp_path, "imagefolder")
    for cls in ("Bag", "Coat"):
        _move_images(root / "train" / cls, root / "val" / cls, 5)
    out = inspect_json(cli, root)
    assert out["splits"]["val"] == 10
    (problem,) = out["problems"]
    assert problem == out["profile"]["problems"][0]
    for fragment in (
        "validation split val/",
        "no images of 8 of the 10 classes",
        "holds 10 image(s) for 10 classes",
        "Remove val/ to let automodel carve a stratified validation split",
        "add images of every class",
    ):
        assert fragment in problem, (fragment, problem)
    assert f"Warning   {problem}" in cli("inspect", root, timeout=INSPECT_TIMEOUT).stdout


def test_tiny_test_folder_is_flagged_and_a_sound_one_is_not(materialize, tmp_path, cli):
    root = copy_of(materialize, tmp_path, "imagefolder")
    assert inspect_json(cli, root)["problems"] == []  # 30 test images per class
    for cls_dir in (root / "test").iterdir():
        for path in sorted(cls_dir.iterdir())[1:]:
            path.unlink()
    (problem,) = inspect_json(cli, root)["problems"]
    assert "test split test/ holds 10 image(s) for 10 classes" in problem and "no images of" not in problem
    assert "Remove test/ to let automodel hold out a stratified test split" in problem
