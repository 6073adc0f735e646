"""`automodel fit --parallel 2` through the real command line: real sandboxed children, two at a time, each
in a slot of its own; a SIGKILL in the middle of a round leaves no sandbox process, and `resume` finishes
the run with the records made before the kill unchanged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIT = [sys.executable, "-m", "automodel.cli"]


@pytest.fixture(scope="module")
def fmnist40(materialize):
    return materialize("fashion-mnist", "imagefolder", 40)


def journal(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]


def training_span(iter_dir: Path) -> tuple[float, float]:
    """(start, end) of the training child's loop, from the wall times in its events."""
    events = {e["phase"]: e["wall"] for e in map(json.loads, (iter_dir / "events.jsonl").read_text().splitlines())}
    return events["train_start"], events["train_done"]


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that name `text` (a sandbox launcher names its run's folders)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and int(pid) != os.getpid():
            found.append(f"{pid}: {cmdline[:200]}")
    return found


def test_fit_parallel_runs_each_round_two_at_a_time_in_slots(cli, fmnist40, tmp_path):
    ws = tmp_path / "ws"
    # A short final refit (--final-share 0.25) keeps the test's time on the rounds.
    res = cli("fit", fmnist40, "--agent", "expert", "--parallel", 2, "--iters", 5, "--time-per-iter", 8,
              "--final-share", 0.25, "--workspace", ws, "--name", "p", "--device", "cpu")
    assert res.returncode == 0, res.stderr[-3000:]
    run = ws / "p"
    info = json.loads((run / "run.json").read_text())
    assert info["config"]["parallel"] == 2 and info["config"]["executor"] == "local"
    assert "pending_round" not in info
    records = [r for r in journal(run) if r["final"]]
    assert [r["iteration"] for r in records] == [1, 2, 3, 4, 5], res.stderr[-3000:]
    assert all(r["status"] == "ok" for r in records)
    assert records[-1]["kind"] == "refit" and "slot" not in records[-1]
    threads = max(1, (os.cpu_count() or 1) // 2)
    for r in records[:-1]:
        assert r["slot"].startswith("slot ") and f"/2 ({threads} thread" in r["slot"]
        assert json.loads((run / f"iter_{r['iteration']:03d}" / "metrics.json").read_text())["config"]["threads"] \
            == threads
    refit = json.loads((run / "iter_005" / "metrics.json").read_text())
    assert refit["config"]["threads"] == (os.cpu_count() or 1)
    # The first round's two candidates trained at the same time.
    (a0, a1), (b0, b1) = training_span(run / "iter_002"), training_span(run / "iter_003")
    assert min(a1, b1) - max(a0, b0) > 4.0, ((a0, a1), (b0, b1))
    assert "#2 runs on slot" in res.stderr and "#3 runs on slot" in res.stderr
    # best/ is the best candidate as recorded, and the final model is its refit.
    shown = json.loads(cli("show", run, "--json").stdout)
    best = shown["best"]["iteration"]
    assert (run / "best" / "ITERATION").read_text().strip() == str(best)
    assert (run / "best" / "model.py").read_text() == (run / f"iter_{best:03d}" / "model.py").read_text()
    assert shown["final"]["kind"] == "refit" and (run / "final" / "model.pt").is_file()


def test_sigkill_in_a_round_leaves_no_sandbox_and_resume_finishes_it(cli, fmnist40, tmp_path):
    ws = tmp_path / "ws"
    proc = subprocess.Popen(FIT + ["fit", str(fmnist40), "--agent", "expert", "--parallel", "2", "--iters", "4",
                                   "--time-per-iter", "5", "--final-share", "0.25", "--workspace", str(ws),
                                   "--name", "k", "--device", "cpu"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    run = ws / "k"
    deadline = time.time() + 300
    # Wait until both candidates of the first round are training.
    while time.time() < deadline:
        events = [run / f"iter_{n:03d}" / "events.jsonl" for n in (2, 3)]
        if all(e.exists() and "train_first_batch" in e.read_text() for e in events):
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        time.sleep(0.2)
    else:
        pytest.fail("the first round never had two candidates training")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(50):  # the launchers die with the threads that started them
        if not processes_mentioning(str(run)):
            break
        time.sleep(0.1)
    assert processes_mentioning(str(run)) == []
    before = (run / "journal.jsonl").read_text()
    assert [r["iteration"] for r in map(json.loads, before.splitlines()) if r["final"]] == [1]
    assert [j["iteration"] for j in json.loads((run / "run.json").read_text())["pending_round"]] == [2, 3]

    res = cli("resume", run)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "finishing the round that was stopped: iterations 2, 3" in res.stderr
    after = (run / "journal.jsonl").read_text()
    assert after.startswith(before), "records completed before the kill must stay byte-identical"
    records = [r for r in journal(run) if r["final"]]
    assert [r["iteration"] for r in records] == [1, 2, 3, 4] and records[-1]["kind"] == "refit"
    assert "pending_round" not in json.loads((run / "run.json").read_text())
    assert processes_mentioning(str(run)) == []
