"""`automodel fit`, `resume`, `show`, `diff` end to end with the built-in expert on real data.

Budgets are tiny (a few seconds per iteration): these tests check the loop's
behaviour, not accuracy; benchmarks/ measures accuracy.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scores import accuracy

from automodel.sandbox.bundle import train_sample_indices

pytestmark = pytest.mark.slow

FIT = [sys.executable, "-m", "automodel.cli"]


def cli(*args, cwd=None, timeout=600):
    return subprocess.run(FIT + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def tree_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def fmnist(materialize):
    return materialize("fashion-mnist", "imagefolder", 20)


@pytest.fixture(scope="module")
def finished(fmnist, tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    # The published protocol (--search greedy): every iteration one edit at the full --time-per-iter.
    proc = cli("fit", fmnist, "--agent", "expert", "--search", "greedy", "--iters", 4, "--time-per-iter", 12,
               "--workspace", ws, "--name", "r1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ws / "r1", proc


def test_fit_runs_the_loop_and_keeps_only_improvements(finished):
    run, proc = finished
    assert "[1/4] Project Architect" in proc.stderr and "[4/4]" in proc.stderr
    assert "brain: built-in expert" in proc.stderr
    shown = json.loads(cli("show", run, "--json").stdout)
    its = shown["iterations"]
    assert [r["iteration"] for r in its] == [1, 2, 3, 4]
    assert shown["final"] is None and not (run / "final").exists()  # greedy: the best iteration is the result
    assert all(r["compute"]["epochs"] > 0 for r in its if r["status"] == "ok")
    assert its[0]["target"] == "architect" and its[0]["status"] == "ok" and its[0]["accepted"]
    assert all(r["target"] in ("data", "model", "train") for r in its[1:])
    accepted = [r["val_accuracy"] for r in its if r["accepted"]]
    assert accepted == sorted(accepted) and len(set(accepted)) == len(accepted), "accepted scores must rise strictly"
    # Every later edit was compared with the best of its time image by image: the images it gained
    # minus those it lost are exactly its change in validation accuracy.
    n_val = len(json.loads((run / "run.json").read_text())["split"]["val"])
    best_val = None
    for rec in (json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()):
        if not rec["final"] or rec["status"] != "ok":
            continue
        if best_val is not None:
            ev = rec["evidence"]
            assert ev["gained"] - ev["lost"] == round((rec["val_accuracy"] - best_val) * n_val), (rec, best_val)
        if rec["accepted"]:
            best_val = rec["val_accuracy"]
    best = shown["best"]
    assert best["val_accuracy"] == max(accepted)
    assert int((run / "best" / "ITERATION").read_text()) == best["iteration"]
    assert (run / "best" / "model.pt").stat().st_size > 0
    assert (run / "best" / "train.py").read_text() == (run / f"iter_{best['iteration']:03d}" / "train.py").read_text()
    assert best["val_accuracy"] >= 0.2 and best["test_accuracy"] >= 0.2  # 10 classes: well above chance (0.1)
    # How precise a validation score is: binomial standard error over the run's own validation images.
    n = len(json.loads((run / "run.json").read_text())["split"]["val"])
    assert shown["val_images"] == n
    p = best["val_accuracy"]
    assert abs(shown["val_std_error"] - (p * (1 - p) / n) ** 0.5) < 1e-3
    assert f"Validation set: {n} images" in proc.stdout


def test_run_directory_records_everything(finished, fmnist):
    run, _ = finished
    info = json.loads((run / "run.json").read_text())
    assert info["dataset"]["path"] == str(fmnist.resolve()) and info["dataset"]["fingerprint"]
    assert set(info["split"]) >= {"train", "val", "test"} and info["config"]["iters"] == 4
    assert info["config"]["search"] == "greedy" and "search_plan" not in info
    assert info["versions"]["torch"]
    journal = [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]
    finals = [r for r in journal if r["final"]]
    assert len(finals) == 4 and all("kind" not in r for r in finals)
    for key in ("parent", "target", "instruction", "reason", "status", "val_accuracy", "test_accuracy", "seconds"):
        assert key in finals[1]
    assert finals[1]["parent"] == 1 and finals[1]["reason"]
    for n in (1, 2, 3, 4):
        d = run / f"iter_{n:03d}"
        for name in ("data.py", "model.py", "train.py", "metrics.json", "summary.json", "stderr.txt"):
            assert (d / name).exists(), f"{d.name}/{name} missing"
        summary = json.loads((d / "summary.json").read_text())
        assert summary["train"]["hparams"], "the summary quotes the hyperparameter block"
        # The Analyst judges the fit from training images predicted like validation, not from augmented batches.
        metrics = json.loads((d / "metrics.json").read_text())
        if metrics["status"] == "ok":
            sample = np.load(run / "data" / "train_y.npy")[
                train_sample_indices(len(np.load(run / "data" / "train_y.npy")))
            ]
            assert metrics["train_eval_accuracy"] == pytest.approx(
                accuracy(d / "probs_train_sample.npy", sample), abs=1e-6
            )
            assert finals[n - 1]["train_accuracy"] == round(metrics["train_eval_accuracy"], 4)
    # The sandbox never got labels of the held-out splits.
    data_files = {p.name for p in (run / "data").iterdir()}
    assert "val_y.npy" not in data_files and "test_y.npy" not in data_files


def test_show_and_diff_are_readable(finished):
    run, _ = finished
    out = cli("show", run).stdout
    assert "best: iteration" in out and "architect" in out
    assert "images, so one image is" in out and "(one standard error)" in out
    # What each iteration's training consumed, from its metrics.json, in the row of the first iteration.
    compute = json.loads((run / "iter_001" / "metrics.json").read_text())["compute"]
    assert compute["epochs"] > 0 and compute["images_per_second"] > 0
    head, first = out.splitlines()[0], out.splitlines()[1]
    assert "epochs" in head and "img/s" in head and "cpu" in head
    assert f"{compute['epochs']:.1f}" in first.split() and f"{compute['images_per_second']:.0f}" in first.split()
    assert f"{100 * compute['cpu_utilisation']:.0f}%" in first.split()
    diff = cli("diff", run, 1, 2)
    assert diff.returncode == 0 and diff.stdout.startswith("---") and "+" in diff.stdout
    bad = cli("diff", run, 1, 9)
    assert bad.returncode != 0 and "Iteration 9" in bad.stderr and "Traceback" not in bad.stderr


def test_sigkill_mid_iteration_then_resume(fmnist, tmp_path):
    ws = tmp_path / "ws"
    proc = subprocess.Popen(
        FIT
        + [
            "fit",
            str(fmnist),
            "--agent",
            "expert",
            "--iters",
            "3",
            "--time-per-iter",
            "6",
            # A shorter final refit (10 s, not 23 s): the kill lands in iteration 2 either way.
            "--final-share",
            "0.4",
            "--workspace",
            str(ws),
            "--name",
            "k",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    run = ws / "k"
    deadline = time.time() + 300
    # Wait until iteration 2 is training: iteration 1 is complete, 2 is half-done.
    while time.time() < deadline:
        ev = run / "iter_002" / "events.jsonl"
        if ev.exists() and "train_first_batch" in ev.read_text():
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    else:
        pytest.fail("iteration 2 never started training")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before_journal = (run / "journal.jsonl").read_text()
    before_files = tree_hashes(run / "iter_001")
    assert len([line for line in before_journal.splitlines() if json.loads(line)["final"]]) == 1

    res = cli("resume", run)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "redoing interrupted iteration 2" in res.stderr
    after_journal = (run / "journal.jsonl").read_text()
    assert after_journal.startswith(before_journal), "completed records must stay byte-identical"
    assert tree_hashes(run / "iter_001") == before_files, "completed iteration files must stay byte-identical"
    shown = json.loads(cli("show", run, "--json").stdout)
    # The budget search (the default): whether iteration 2 was a candidate or already the final refit
    # when it was killed, the resumed run ends with the final refit on train+val.
    its = shown["iterations"]
    assert [r["iteration"] for r in its] == list(range(1, len(its) + 1)) and len(its) <= 3
    assert its[-1]["kind"] == "refit" and shown["final"]["kind"] == "refit"
    assert shown["final"]["refits"] == [its[-1]["iteration"]] and (run / "final" / "model.pt").is_file()


def test_bad_options_give_clear_errors(tmp_path, fmnist):
    res = cli("fit", fmnist, "--iters", "-2")
    assert res.returncode == 2 and "--iters" in res.stderr and "at least 1" in res.stderr
    res = cli("fit", tmp_path / "nowhere", "--agent", "expert")
    assert res.returncode != 0 and "does not exist" in res.stderr and "Traceback" not in res.stderr
    afile = tmp_path / "ws-file"
    afile.write_text("not a folder")
    res = cli("fit", fmnist, "--agent", "expert", "--workspace", afile)
    assert res.returncode != 0 and "is a file" in res.stderr and "Traceback" not in res.stderr
    res = cli("resume", tmp_path)
    assert res.returncode != 0 and "run.json" in res.stderr


def test_resume_refuses_a_changed_dataset(fmnist, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(fmnist, data)
    ws = tmp_path / "ws"
    res = cli("fit", data, "--agent", "expert", "--iters", 1, "--time-per-iter", 5, "--workspace", ws, "--name", "c")
    assert res.returncode == 0, res.stderr[-2000:]
    victim = next((data / "train").rglob("*.png"))
    victim.unlink()
    res = cli("resume", ws / "c", "--iters", 2)
    assert res.returncode != 0
    assert "not the one this run was trained on" in res.stderr and "Traceback" not in res.stderr
