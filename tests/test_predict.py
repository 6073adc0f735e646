"""`automodel predict` on real held-out images, through the real CLI and sandbox."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from automodel.intake import Split, load_dataset
from automodel.outputs.bestmodel import load_best
from automodel.search.workspace import RunDir

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "automodel.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_predict_on_the_test_images_reproduces_the_harness(finished_run, tmp_path):
    run = RunDir(finished_run)
    # The model predict uses: the run's final refit (its record, with the harness's test probabilities).
    best = next(r for r in run.iterations() if r.iteration == load_best(finished_run).iteration).to_json()
    assert best["kind"] == "refit"
    info = run.info
    ds = load_dataset(info["dataset"]["path"])
    split = Split.from_json(info["split"], ds)
    test_dir = Path(info["dataset"]["path"]) / "test"
    out = tmp_path / "out" / "preds.csv"
    proc = cli("predict", finished_run, test_dir, "--out", out, "--top-k", 3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_csv(out)
    assert list(rows[0]) == ["filename", "label", "confidence", "label_2", "confidence_2", "label_3", "confidence_3"]

    # Same images, same decode, same model: the harness's probabilities for the test split.
    probs = np.load(finished_run / f"iter_{best['iteration']:03d}" / "probs_test.npy")
    by_name = {r["filename"]: r for r in rows}
    assert len(by_name) == len(split.test) == len(probs)
    correct = 0
    for k, i in enumerate(split.test):
        item = ds.items[i]
        row = by_name[Path(item.relpath).relative_to("test").as_posix()]
        assert row["label"] == ds.classes[int(probs[k].argmax())]
        assert float(row["confidence"]) == pytest.approx(float(probs[k].max()), abs=2e-6)
        top3 = sorted(probs[k], reverse=True)[:3]
        assert [float(row[c]) for c in ("confidence", "confidence_2", "confidence_3")] == pytest.approx(top3, abs=2e-6)
        correct += row["label"] == ds.classes[item.label]
    assert round(correct / len(split.test), 4) == best["test_accuracy"]
    assert f"Predicted {len(split.test)} image(s)" in proc.stdout


def test_unreadable_images_are_skipped_and_reported(finished_run, tmp_path):
    test_dir = Path(RunDir(finished_run).info["dataset"]["path"]) / "test"
    folder = tmp_path / "new"
    (folder / "sub").mkdir(parents=True)
    good = sorted(test_dir.rglob("*.png"))[:2]
    shutil.copyfile(good[0], folder / "a.png")
    shutil.copyfile(good[1], folder / "sub" / "b.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "notes.txt").write_text("not an image, ignored")
    out = tmp_path / "p.csv"
    proc = cli("predict", finished_run, folder, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped broken.png" in proc.stderr and "skipped 1 unreadable" in proc.stdout
    rows = read_csv(out)
    assert [r["filename"] for r in rows] == ["a.png", "sub/b.png"]
    assert list(rows[0]) == ["filename", "label", "confidence"]
    classes = RunDir(finished_run).info["dataset"]["classes"]
    assert all(r["label"] in classes and 0.0 < float(r["confidence"]) <= 1.0 for r in rows)

    single = cli("predict", finished_run, folder / "a.png", "--out", tmp_path / "one.csv")
    assert single.returncode == 0, single.stderr[-3000:]
    assert read_csv(tmp_path / "one.csv")[0]["label"] == rows[0]["label"]


def test_bad_input_gives_clear_errors(finished_run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = cli("predict", finished_run, empty, "--out", tmp_path / "p.csv")
    assert proc.returncode == 3 and "contains no images" in proc.stderr and "Traceback" not in proc.stderr

    proc = cli("predict", finished_run, tmp_path / "missing", "--out", tmp_path / "p.csv")
    assert proc.returncode == 3 and "does not exist" in proc.stderr

    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.jpg").write_bytes(b"garbage")
    proc = cli("predict", finished_run, only_bad, "--out", tmp_path / "p.csv")
    assert proc.returncode == 3 and "could be read" in proc.stderr

    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    proc = cli("predict", finished_run, only_bad, "--out", blocker / "p.csv")
    assert proc.returncode == 2 and "--out" in proc.stderr and "Traceback" not in proc.stderr

    RunDir.create(tmp_path / "ws", "empty", {"dataset": {}})
    proc = cli("predict", tmp_path / "ws" / "empty", only_bad, "--out", tmp_path / "p.csv")
    assert proc.returncode == 5 and "no finished iteration" in proc.stderr and "automodel resume" in proc.stderr

    proc = cli("predict", finished_run, empty, "--top-k", 0)
    assert proc.returncode == 2 and "--top-k" in proc.stderr


def test_generated_code_runs_in_the_sandbox_not_in_this_process(finished_run, tmp_path):
    """The run's model code (final/model.py, the refit predict uses) is untrusted: predict must run it in a
    child with a cleared environment."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    model = run / "final" / "model.py"
    model.write_text(model.read_text() + (
        "\n\ndef build_model(info):\n"
        "    import os\n"
        "    raise RuntimeError('secret is ' + os.environ.get('AUTOMODEL_TEST_SECRET', 'not visible'))\n"))
    test_dir = Path(RunDir(run).info["dataset"]["path"]) / "test"
    env = dict(__import__("os").environ, AUTOMODEL_TEST_SECRET="s3cr3t")
    proc = cli("predict", run, test_dir, "--out", tmp_path / "p.csv", env=env)
    assert proc.returncode == 5
    assert "failed to predict in the sandbox" in proc.stderr
    assert "secret is not visible" in proc.stderr and "s3cr3t" not in proc.stderr
    assert not (tmp_path / "p.csv").exists()
    assert json.loads((run / "run.json").read_text())  # the run itself is untouched
