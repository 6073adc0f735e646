"""Helpers shared by tests/test_runner*.py, tests/test_sandbox*.py, tests/test_hostile_parent.py and
benchmarks/hostile_suite.py."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

from needs import need_level

from automodel.sandbox.bundle import prepare_data
from automodel.sandbox.iteration import RunConfig

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parents[1] / "pipelines" / "reference"
MODULES = ("data", "model", "train")


def fashion_bundle(materialize, dest: Path, per_class: int = 20, seed: int = 0):
    """(dataset, DataBundle) for a small real Fashion-MNIST folder."""
    from automodel.intake import load_dataset

    root = materialize("fashion-mnist", "imagefolder", per_class)
    ds = load_dataset(root)
    split = ds.split(seed=seed)
    bundle = prepare_data(ds, split, ds.decode(), dest)
    return ds, bundle


def make_iter(iter_dir: Path, replace: dict[str, str] | None = None, hostile: dict | None = None) -> Path:
    """An iteration dir with the reference modules, some replaced by tests/hostile/<file>."""
    iter_dir.mkdir(parents=True, exist_ok=True)
    for module in MODULES:
        shutil.copyfile(REFERENCE / f"{module}.py", iter_dir / f"{module}.py")
    for module, filename in (replace or {}).items():
        source = (HERE / filename).read_text()
        if hostile is not None:  # the module reads its instructions from HOSTILE_CONFIG
            source = f"HOSTILE_CONFIG = {hostile!r}\n" + source
        (iter_dir / f"{module}.py").write_text(source)
    return iter_dir


def fast_config(**overrides) -> RunConfig:
    """Short limits so a misbehaving pipeline costs a few seconds."""
    values = dict(time_limit=2.0, threads=1, interrupt_grace=1.0, kill_grace=5.0, preflight_limit=60.0,
                  predict_allowance=60.0, preflight_subset=32)
    values.update(overrides)
    return RunConfig(**values)


def report(iter_dir: Path) -> dict:
    """What a hostile module found, from the HOSTILE_REPORT line it printed (its own files are deleted)."""
    for line in reversed((iter_dir / "stdout.txt").read_text().splitlines()):
        if line.startswith("HOSTILE_REPORT "):
            return json.loads(line[len("HOSTILE_REPORT "):])
    raise AssertionError(f"no HOSTILE_REPORT line in {iter_dir / 'stdout.txt'}")


def processes_with(*needles: str) -> list[tuple[int, str]]:
    """(pid, what) of every living process whose cmdline or environment holds a needle."""
    hits = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read().decode("ascii", "replace")
            if stat[stat.rfind(")") + 2:][:1] in ("Z", "X"):
                continue
        except OSError:
            continue
        for what in ("cmdline", "environ"):
            try:
                with open(f"/proc/{name}/{what}", "rb") as fh:
                    text = fh.read().decode("utf-8", "replace")
            except OSError:
                continue
            if any(n and n in text for n in needles):
                hits.append((int(name), what))
    return hits


def meminfo_kb(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def process_count(live_only: bool = False) -> int:
    """Processes on the host; live_only leaves out zombies (an orphaned bwrap waits a moment for
    this machine's init to reap it: it holds no memory and no files)."""
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        if live_only:
            try:
                stat = Path(f"/proc/{name}/stat").read_text(errors="replace")
            except OSError:
                continue
            if stat[stat.rfind(")") + 2:][:1] in ("Z", "X"):
                continue
        count += 1
    return count


class HostSampler:
    """The whole host's process count, Shmem and MemAvailable every 50 ms, from outside the runner."""

    def __init__(self):
        self.base_processes, self.live_base = process_count(), process_count(live_only=True)
        self.base_shmem = meminfo_kb("Shmem")
        self.peak_processes, self.peak_shmem, self.low_available = 0, 0, meminfo_kb("MemAvailable")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak_processes = max(self.peak_processes, process_count())
            self.peak_shmem = max(self.peak_shmem, meminfo_kb("Shmem"))
            self.low_available = min(self.low_available, meminfo_kb("MemAvailable"))
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def require_bwrap() -> None:
    need_level("bwrap")


def scored_accuracy(path: Path, labels) -> float:
    """Accuracy recomputed independently of automodel.sandbox.scoring."""
    import numpy as np

    probs = np.load(path, allow_pickle=False)
    return float((probs.argmax(1) == labels).mean())


__all__ = ["fashion_bundle", "make_iter", "fast_config", "report", "processes_with", "require_bwrap",
           "scored_accuracy", "REFERENCE"]
