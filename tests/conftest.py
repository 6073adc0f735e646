"""Shared fixtures: real data from ../shared, made into user-style folders at test time.

    shared_dir                  Path of the shared folder (skips the test when it is missing)
    materialize(dataset, layout, per_class, split="all") -> Path
                                a folder written by shared/tools/materialize.py, made once per
                                session and reused: treat it as READ-ONLY (copy it to change it)
    cli(*args, env=None)        run `python -m automodel.cli ARGS` in a real subprocess

Every test session gets its own AUTOMODEL_CACHE so tests never touch ~/.cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from needs import missing

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MATERIALIZE = SHARED / "tools" / "materialize.py"


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """Point AUTOMODEL_CACHE at a fresh folder for the whole session (subprocesses inherit it)."""
    old = os.environ.get("AUTOMODEL_CACHE")
    os.environ["AUTOMODEL_CACHE"] = str(tmp_path_factory.mktemp("automodel-cache"))
    yield
    if old is None:
        os.environ.pop("AUTOMODEL_CACHE", None)
    else:
        os.environ["AUTOMODEL_CACHE"] = old


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "datasets").is_dir():
        missing("shared", f"shared data folder not found at {SHARED} (CI clones the repo with shared/ beside it)")
    return SHARED


@pytest.fixture(scope="session")
def materialize(shared_dir, tmp_path_factory):
    """Return make(dataset, layout, per_class, split="all") -> Path, cached for the session."""
    made: dict[tuple, Path] = {}

    def make(dataset: str, layout: str, per_class: int | None, split: str = "all") -> Path:
        key = (dataset, layout, per_class, split)
        if key not in made:
            if not MATERIALIZE.is_file():
                missing("shared", f"{MATERIALIZE} not found")
            out = tmp_path_factory.mktemp(f"{dataset}-{layout}-{per_class or 'all'}-{split}")
            cmd = [sys.executable, str(MATERIALIZE), "--dataset", dataset, "--layout", layout,
                   "--split", split, "--out", str(out)]
            if per_class is not None:
                cmd += ["--per-class", str(per_class)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"materialize.py failed ({proc.returncode}): {proc.stderr or proc.stdout}")
            made[key] = out
        return made[key]

    return make


@pytest.fixture
def cli():
    """Run the real command line in a subprocess; returns subprocess.CompletedProcess (text)."""

    def run(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        full_env = dict(os.environ)
        full_env.update(env or {})
        return subprocess.run([sys.executable, "-m", "automodel.cli", *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, env=full_env, cwd=REPO)

    return run


@pytest.fixture(scope="session")
def finished_run(materialize, tmp_path_factory) -> Path:
    """A real finished run: `automodel fit` with the built-in expert, 2 iterations of 5 s on
    Fashion-MNIST (20 images per class and split). Made once per session: treat it as
    READ-ONLY (copy it with shutil.copytree to change it)."""
    dataset = materialize("fashion-mnist", "imagefolder", 20)
    ws = tmp_path_factory.mktemp("finished-run")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "automodel.cli",
            "fit",
            str(dataset),
            "--agent",
            "expert",
            "--iters",
            "2",
            "--time-per-iter",
            "5",
            "--workspace",
            str(ws),
            "--name",
            "run",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"automodel fit failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    if "could not write the report" in proc.stderr:
        raise RuntimeError(f"automodel fit did not write its report:\n{proc.stderr[-4000:]}")
    return ws / "run"
