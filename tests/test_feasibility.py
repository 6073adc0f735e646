"""The feasibility check, one dataset per finding, through the real CLI.

For each finding that makes a run meaningless: `fit` refuses before making a
run folder, with the number behind it and the fix, and the exit code of its
kind (3 for the dataset, 2 for the budget); `inspect --json` lists the same
finding; `fit --force` starts anyway and records it in run.json. The speed
estimates depend on the cores, so those commands run pinned to one core.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import string
import subprocess
import sys
from pathlib import Path

import pytest

from automodel.core import Hardware
from automodel.hardware import training_rate
from automodel.intake import load_dataset
from automodel.intake.feasibility import Budget, assess, looks_like_file_name

REPO = Path(__file__).resolve().parents[1]


def automodel(*args, one_core: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
    def pin():
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    return subprocess.run([sys.executable, "-m", "automodel.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, preexec_fn=pin if one_core else None)


def copy_flat(dest: Path, classes: dict[str, list[Path]]) -> Path:
    for name, files in classes.items():
        (dest / name).mkdir(parents=True)
        for f in files:
            shutil.copy(f, dest / name / f.name)
    return dest


def images_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.png"))


# ---------------------------------------------------------------- one dataset per finding


def small_class(materialize, tmp: Path) -> tuple[Path, list[str]]:
    root = tmp / "small"
    shutil.copytree(materialize("fashion-mnist", "flat", 20), root)
    for f in sorted((root / "Bag").iterdir())[4:]:
        f.unlink()  # 4 bags: 1 test, 1 validation, 2 for training
    return root, []


def too_many_classes(materialize, tmp: Path) -> tuple[Path, list[str]]:
    files = images_of(materialize("fashion-mnist", "flat", 100))
    names = ["group-" + "".join(p) for p in itertools.islice(itertools.product(string.ascii_lowercase, repeat=2), 200)]
    return copy_flat(tmp / "many", {n: files[5 * i:5 * i + 5] for i, n in enumerate(names)}), []


def epoch_too_long(materialize, tmp: Path) -> tuple[Path, list[str]]:
    return materialize("fashion-mnist", "imagefolder", 800, split="train"), []


def budget_too_short(materialize, tmp: Path) -> tuple[Path, list[str]]:
    return materialize("fashion-mnist", "imagefolder", 20), ["--time-budget", "10"]


def held_out_copies(materialize, tmp: Path) -> tuple[Path, list[str]]:
    root = tmp / "leak"
    shutil.copytree(materialize("fashion-mnist", "imagefolder", 20), root)
    for cls in (root / "train").iterdir():
        for i, f in enumerate(sorted(cls.iterdir())[:8]):
            shutil.copy(f, root / "test" / cls.name / f"copy_{i}.png")
    return root, []


def filename_labels(materialize, tmp: Path) -> tuple[Path, list[str]]:
    files = images_of(materialize("fashion-mnist", "flat", 20))
    return copy_flat(tmp / "names", {f"IMG_{i + 1:04d}": files[20 * i:20 * i + 20] for i in range(4)}), []


CASES = {
    # finding: (dataset builder, exit code, pinned to one core)
    "small_class": (small_class, 3, False),
    "too_many_classes": (too_many_classes, 2, True),
    "epoch_too_long": (epoch_too_long, 2, True),
    "budget_too_short": (budget_too_short, 2, False),
    "held_out_copies": (held_out_copies, 3, False),
    "filename_labels": (filename_labels, 3, False),
}


def the_number_is_the_datasets(code: str, message: str, finding: dict, report: dict) -> None:
    """The number a message states is the one the dataset (inspect's profile) and budget give."""
    profile = report["profile"]
    if code == "small_class":
        n = int(re.search(r"has (\d+) training image", message).group(1))
        assert n == min(profile["class_counts"]["train"].values()) == finding["value"] == 2
    elif code == "too_many_classes":
        assert message.startswith(f"{profile['num_classes']} classes for 5 s")
        views = float(re.search(r"seen about (\d+) times", message).group(1))
        assert views == pytest.approx(finding["value"], abs=1) and finding["value"] < finding["limit"]
    elif code == "epoch_too_long":
        assert int(re.search(r"of the (\d+) training images", message).group(1)) == profile["splits"]["train"]
        assert "1 CPU core(s)" in message and finding["value"] > 5
    elif code == "budget_too_short":
        assert "--time-budget 10 s is shorter than the fixed cost" in message and finding["value"] == 10
    elif code == "held_out_copies":
        n, total = map(int, re.search(r"(\d+) of the (\d+) test images", message).groups())
        ds = load_dataset(report["root"], progress=False)
        split = ds.split(seed=0)
        trained = {hashlib.sha256(ds.items[i].path.read_bytes()).digest() for i in split.train}
        copies = sum(hashlib.sha256(ds.items[i].path.read_bytes()).digest() in trained for i in split.test)
        assert n == copies == profile["duplicates"]["shared_with_train"]["test"] and total == len(split.test)
        assert n / total >= finding["limit"] and finding["value"] == pytest.approx(n / total, abs=1e-4)
    elif code == "filename_labels":
        assert "4 of the 4 class names look like file names rather than labels (IMG_0001, IMG_0002" in message


@pytest.mark.slow
@pytest.mark.parametrize("code", list(CASES))
def test_fit_refuses_a_meaningless_run_unless_forced(code, materialize, tmp_path):
    build, exit_code, one_core = CASES[code]
    data, extra = build(materialize, tmp_path)
    ws = tmp_path / "ws"
    budget = ["--iters", 1, "--time-per-iter", 5, *extra]
    proc = automodel("fit", data, *budget, "--workspace", ws, "--name", "r", "--device", "cpu", one_core=one_core)
    assert proc.returncode == exit_code, proc.stderr[-3000:]
    error = proc.stderr.split("automodel: error: ", 1)[1]
    assert error.startswith("This run would not be meaningful") and "--force" in error and "Traceback" not in error
    assert not (ws / "r").exists()  # refused before a run folder is made

    inspect = automodel("inspect", data, "--json", *budget, "--device", "cpu", one_core=one_core)
    assert inspect.returncode == 0, inspect.stderr[-2000:]
    report = json.loads(inspect.stdout)
    finding = next(f for f in report["findings"] if f["code"] == code)
    assert finding["severity"] == "refuse" and finding["blocking"] is True
    assert finding["message"] in error  # the same paragraph, with its fix
    the_number_is_the_datasets(code, finding["message"], finding, report)

    forced = automodel("fit", data, *budget, "--workspace", ws, "--name", "r", "--device", "cpu", "--force",
                       one_core=one_core)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert f"forced past: refuses [{code}]" in forced.stderr
    recorded = json.loads((ws / "r" / "run.json").read_text())["feasibility"]
    assert any(f["code"] == code and f["blocking"] for f in recorded)


def test_warnings_do_not_stop_fit_and_inspect_prints_them(materialize, cli):
    data = materialize("fashion-mnist", "imagefolder", 20)
    proc = cli("inspect", data, "--time-budget", 60, "--device", "cpu")
    assert proc.returncode == 0
    line = next(x for x in proc.stdout.splitlines() if x.startswith("Feasible"))
    assert "1 finding(s)" in line and "refuse" not in line
    assert "warning [budget_fits_fewer_iterations] --time-budget 60 s fits about 0 of the 20 iterations" in proc.stdout
    proc = cli("inspect", data, "--device", "cpu")
    assert "Feasible  for 20 x 60 s on" in proc.stdout and ": no findings" in proc.stdout


def test_the_findings_follow_the_numbers():
    """The pure function: each threshold is crossed by the numbers, not by the dataset's name."""
    base = {"num_classes": 10, "classes": [f"c{i}" for i in range(10)], "splits": {"train": 1000, "val": 250,
            "test": 250}, "working": {"image_size": [32, 32]},
            "class_counts": {s: {f"c{i}": n for i in range(10)} for s, n in (("train", 100), ("val", 25),
                                                                               ("test", 25))},
            "duplicates": {"shared_with_train": {"val": 0, "test": 0}}}
    cpu2 = Hardware(cpu_cores=2, device="cpu")
    budget = Budget(60.0, 20, None, 15.0, 5.0)
    assert assess(base, cpu2, budget) == []
    slow = assess(base, Hardware(cpu_cores=1, device="cpu"), Budget(5.0, 20, None, 15.0, 5.0))
    assert slow == []  # 1000 images in 5 s on one core still fit (about 3100 images/s at 32 px)
    big = dict(base, splits={"train": 20000, "val": 0, "test": 0}, working={"image_size": [128, 128]})
    (epoch,) = [f for f in assess(big, cpu2, budget) if f.code == "epoch_too_long"]
    side = int(re.search(r"at (\d+) px or less one epoch fits", epoch.message).group(1))
    assert not epoch.blocking and epoch.value > 60
    assert 20000 / training_rate(side, cpu2) <= 60 < 20000 / training_rate(side + 8, cpu2)
    assert assess(big, cpu2, Budget(10.0, 20, None, 15.0, 5.0))[0].blocking  # not even at 32 px
    assert assess(dict(base, duplicates={"shared_with_train": {"val": 0, "test": 30}}), cpu2, budget)[0].blocking
    (few,) = assess(dict(base, duplicates={"shared_with_train": {"val": 0, "test": 3}}), cpu2, budget)
    assert not few.blocking and "3 of the 250 test images (1%)" in few.message
    for name in ("IMG_0001", "DSC01234", "3f9a0c1e2b7d4a55", "20230412_153012", "cat.jpg",
                 "123e4567-e89b-12d3-a456-426614174000"):
        assert looks_like_file_name(name), name
    for name in ("cat", "00042", "n01440764", "001.Black_footed_Albatross", "T-shirt_top", "7", "image_classes"):
        assert not looks_like_file_name(name), name
