"""A new user's first run on every machine: each sandbox level, from any working
directory and workspace, through the real CLI; a refused bubblewrap; harness
failures that stop the run instead of being "repaired"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from needs import need_level

from automodel.sandbox.probe import probe

REPO = Path(__file__).resolve().parents[1]


def automodel(*args, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real CLI, started from `cwd` (so a default `workspace/` is relative to it)."""
    full = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "automodel.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=full, cwd=cwd)


def journal(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines() if line.strip()]


def only_run(workspace: Path) -> Path:
    (run,) = [p for p in workspace.iterdir() if (p / "run.json").is_file()]
    return run


@pytest.fixture(scope="module")
def fm30(materialize) -> Path:
    return materialize("fashion-mnist", "imagefolder", 30)


@pytest.mark.slow
@pytest.mark.parametrize("level", ["bwrap", "unshare", "none"])
def test_fit_predict_export_from_a_relative_workspace(level, fm30, tmp_path):
    """The README's first command, shortened, at each level, run where `workspace/` is relative."""
    need_level(level)
    env = {"AUTOMODEL_SANDBOX": level}
    fit = automodel("fit", fm30, "--iters", 2, "--time-per-iter", 5, "--agent", "expert", "--device", "cpu",
                    cwd=tmp_path, env=env)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "Failed iterations: 0%." in fit.stdout
    assert f"sandbox: {level}" in fit.stderr
    if level != "bwrap":
        assert "WITHOUT filesystem isolation" in fit.stderr and "apt-get install bubblewrap" in fit.stderr
    run = only_run(tmp_path / "workspace")
    finals = [r for r in journal(run) if r.get("final")]
    assert [r["status"] for r in finals] == ["ok", "ok"] and [r["repairs"] for r in finals] == [0, 0]
    relative = run.relative_to(tmp_path)

    # predict and export launch children too: same relative paths, same level.
    images = fm30 / "test" / "Bag"
    pred = automodel("predict", relative, images, "--out", "preds.csv", cwd=tmp_path, env=env)
    assert pred.returncode == 0, pred.stderr[-3000:]
    rows = (tmp_path / "preds.csv").read_text().splitlines()
    assert len(rows) == 1 + len(list(images.iterdir()))
    export = automodel("export", relative, "--format", "torchscript", "--out", "model.ts", cwd=tmp_path, env=env)
    assert export.returncode == 0, export.stderr[-3000:]
    assert (tmp_path / "model.ts").stat().st_size > 0


@pytest.mark.slow
def test_run_from_a_relative_pipeline_and_a_workspace_with_spaces_through_a_link(fm30, tmp_path):
    """`run` with relative paths, and `fit` into a workspace whose path has spaces and a symlink."""
    level = "bwrap" if probe("bwrap") else "none"
    env = {"AUTOMODEL_SANDBOX": level}
    pipe = tmp_path / "my pipeline"
    pipe.mkdir()
    for name in ("data.py", "model.py", "train.py"):
        (pipe / name).write_bytes((REPO / "pipelines" / "reference" / name).read_bytes())
    run = automodel("run", fm30, "--pipeline", "my pipeline", "--time-limit", 3, "--json", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["status"] == "ok"

    real = tmp_path / "real place with spaces"
    real.mkdir()
    (tmp_path / "runs link").symlink_to(real)
    fit = automodel("fit", fm30, "--iters", 1, "--time-per-iter", 5, "--agent", "expert", "--workspace", "runs link/ws",
                    "--name", "a run", cwd=tmp_path, env=env)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert [r["status"] for r in journal(real / "ws" / "a run")] == ["ok"]


def _fake_bwrap(tmp_path: Path) -> dict:
    """A bwrap first on PATH that refuses like Ubuntu 24.04's AppArmor does."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    fake = bin_dir / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.slow
def test_refused_bubblewrap_falls_back_and_trains(fm30, tmp_path):
    env = {**_fake_bwrap(tmp_path), "AUTOMODEL_SANDBOX": ""}
    fit = automodel("fit", fm30, "--iters", 1, "--time-per-iter", 5, "--agent", "expert", cwd=tmp_path, env=env)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "Failed iterations: 0%." in fit.stdout
    # The warning names bubblewrap and what it said, and what is not protected.
    assert "bubblewrap is installed but refused here (bwrap: setting up uid map: Permission denied)" in fit.stderr
    assert "WITHOUT filesystem isolation" in fit.stderr
    assert "Traceback" not in fit.stderr


def test_forced_bubblewrap_that_is_refused_stops_before_any_iteration(fm30, tmp_path):
    env = {**_fake_bwrap(tmp_path), "AUTOMODEL_SANDBOX": "bwrap"}
    fit = automodel("fit", fm30, "--iters", 2, "--time-per-iter", 5, "--agent", "expert", cwd=tmp_path, env=env)
    assert fit.returncode != 0
    assert "bwrap: setting up uid map: Permission denied" in fit.stderr and "bubblewrap" in fit.stderr
    assert "AppArmor" in fit.stderr and "Traceback" not in fit.stderr
    assert not list(tmp_path.glob("workspace/*/iter_*"))


@pytest.mark.slow
def test_a_harness_failure_stops_the_run_at_once_and_resume_continues(fm30, tmp_path):
    """The staged data broken behind the run's back: no repair, no Analyst, no record;
    `resume` says what broke, and once the data is staged again it continues."""
    fit = automodel("fit", fm30, "--iters", 1, "--time-per-iter", 5, "--agent", "expert", "--name", "r", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run = tmp_path / "workspace" / "r"
    before = (run / "journal.jsonl").read_bytes()
    (run / "data" / "train_x.npy").write_bytes(b"not an array")

    broken = automodel("resume", "workspace/r", "--iters", 4, cwd=tmp_path)
    assert broken.returncode == 9, broken.stderr[-3000:]
    assert "automodel's own side failed, not the pipeline" in broken.stderr
    assert "automodel resume workspace/r" in broken.stderr and "Traceback (most recent call last)" in broken.stderr
    assert "repairs it" not in broken.stderr
    assert broken.stderr.count("[2/4]") == 1 and "[3/4]" not in broken.stderr  # stopped after one failure
    assert (run / "journal.jsonl").read_bytes() == before  # nothing recorded for the failed attempt

    (run / "data" / "train_x.npy").unlink()  # resume stages what is missing again
    again = automodel("resume", "workspace/r", "--iters", 2, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r["iteration"] for r in journal(run) if r.get("final")] == [1, 2]
