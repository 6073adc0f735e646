"""The one supervisor: children run side by side in their own slots, each held to its own limits."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

from automodel.sandbox.levels import INSIDE_ITER, Mount, Request, base_env, python_mounts
from automodel.sandbox.limits import Slot
from automodel.sandbox.probe import choose_level
from automodel.sandbox.supervisor import run_child

REPORT_THREADS = """
import json, os, sys, time
import torch
x = torch.randn(256, 256)
for _ in range(20):
    x = x @ x.T / 256
print(json.dumps({"omp": os.environ.get("OMP_NUM_THREADS"), "torch": torch.get_num_threads()}))
"""
# Grows by 16 MB every 0.1 s to 2.5 GB: it crosses its 1.5 GiB share at a pace the watchdog (a scan
# every 0.25 s) sees, before the cgroup's backstop at 1.1x kills it; a burst would race the two.
HOG = "import time\nblocks = []\nfor _ in range(160):\n    blocks.append(b'x' * (16 * 2**20))\n    time.sleep(0.1)\n"


def request(level: str, folder: Path, script: str, threads: int) -> Request:
    folder.mkdir(parents=True, exist_ok=True)
    inside = INSIDE_ITER if level == "bwrap" else folder
    mounts = (*python_mounts(()), Mount(folder, INSIDE_ITER, writable=True)) if level == "bwrap" else ()
    return Request(argv=(sys.executable, "-I", "-c", script), cwd=inside, stdout=folder / "out.txt",
                   stderr=folder / "err.txt", mounts=mounts, env=base_env(threads, home=str(inside), tmp=str(inside)))


def test_two_children_with_one_thread_each_both_finish_within_their_limits(tmp_path):
    level = choose_level()
    slot = Slot(threads=1, memory=1536 * 2**20, max_processes=16)
    outcomes = {}

    def run(name: str, script: str) -> None:
        outcomes[name] = run_child(request(level, tmp_path / name, script, slot.threads), level, slot,
                                   deadline=lambda now, launched: ("run", launched + 120), work=tmp_path / name)

    threads = [threading.Thread(target=run, args=(name, REPORT_THREADS)) for name in ("a", "b")]
    threads.append(threading.Thread(target=run, args=("hog", HOG)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in ("a", "b"):
        outcome = outcomes[name]
        assert outcome.reason == "exited" and outcome.exit_code == 0, (tmp_path / name / "err.txt").read_text()
        seen = json.loads((tmp_path / name / "out.txt").read_text())
        assert seen == {"omp": "1", "torch": 1}
        assert 0 < outcome.peak_memory < slot.memory_bytes() and outcome.peak_processes <= slot.max_processes
    # The third child, in a slot of the same size, went past its memory share and only it was stopped.
    assert outcomes["hog"].reason == "memory" and outcomes["hog"].peak_memory > slot.memory_bytes()
    assert "GiB" in outcomes["hog"].message


@pytest.mark.parametrize("gpu", ["0", "1,2"])
def test_a_slot_names_the_gpus_a_child_sees(tmp_path, gpu):
    """On CUDA each slot gets its GPU id(s); the child sees exactly those (checked here without a GPU)."""
    from automodel.sandbox.requests import RunConfig

    assert RunConfig(gpu=gpu).slot().gpu == gpu
    level = choose_level()
    req = request(level, tmp_path / "g", "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES'))", 1)
    outcome = run_child(req, level, Slot(threads=1, gpu=gpu), deadline=lambda now, launched: ("run", launched + 60))
    assert outcome.exit_code == 0 and (tmp_path / "g" / "out.txt").read_text().strip() == gpu
