"""`automodel fit --executor ray` against a real local Ray instance (started by `fit`, 2 CPUs here):
candidates are Ray tasks that run the same sandboxed child on their node and send files back; the driver
scores them. A worker killed during a candidate makes Ray's task fail and the candidate runs again; a
SIGKILLed `fit` leaves no Ray task and no sandbox process, and `resume` finishes the round."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from needs import missing
from test_parallel_fit import journal, processes_mentioning

REPO = Path(__file__).resolve().parents[1]
FIT = [sys.executable, "-m", "automodel.cli"]


@pytest.fixture(scope="module", autouse=True)
def ray_installed():
    try:
        import ray  # noqa: F401
    except ImportError:
        missing("ray", 'Ray is not installed (pip install -e ".[test]" installs it)')


@pytest.fixture(scope="module")
def fmnist40(materialize):
    return materialize("fashion-mnist", "imagefolder", 40)


def fit_args(data: Path, ws: Path, name: str, iters: int = 5, seconds: int = 8) -> list[str]:
    # A short final refit (--final-share 0.25) keeps the test's time on the rounds.
    return ["fit", str(data), "--agent", "expert", "--parallel", "2", "--executor", "ray", "--iters", str(iters),
            "--time-per-iter", str(seconds), "--final-share", "0.25", "--workspace", str(ws), "--name", name,
            "--device", "cpu"]


def ray_tasks() -> list[int]:
    """Pids of Ray workers running automodel's task now (Ray titles them after the function)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if cmdline.startswith("ray::run_candidate"):
            found.append(int(pid))
    return found


def training_on_node(node_dir: Path) -> list[Path]:
    """Event logs of runs training on the node now."""
    return [e for e in node_dir.glob("iter-*/iter/events.jsonl") if "train_first_batch" in e.read_text()]


def test_fit_on_a_local_ray_instance_runs_rounds_as_tasks_and_a_killed_worker_reruns_its_candidate(
        cli, fmnist40, tmp_path):
    # One run shows both: the round's candidates as Ray tasks scored here, and a worker SIGKILLed while its
    # candidate trains (Ray reports the task lost; the candidate runs once more and the run completes).
    ws, node = tmp_path / "ws", tmp_path / "node"
    proc = subprocess.Popen(FIT + fit_args(fmnist40, ws, "r"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=REPO, env={**os.environ, "AUTOMODEL_NODE_DIR": str(node)})
    deadline = time.time() + 300
    killed = None
    while time.time() < deadline and killed is None:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        # Both candidates of the first round train at once, each in a Ray task: kill one of the workers.
        if (ws / "r" / "iter_003").is_dir() and len(training_on_node(node)) == 2 and len(ray_tasks()) == 2:
            killed = ray_tasks()[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    assert killed is not None, "the first round never had two candidates training in Ray tasks"
    _, err = proc.communicate(timeout=600)
    stderr = err.decode()
    assert proc.returncode == 0, stderr[-3000:]
    assert "executor: Ray" in stderr and "a local instance" in stderr and "lost its Ray worker" in stderr
    run = ws / "r"
    info = json.loads((run / "run.json").read_text())
    assert info["config"]["executor"] == "ray" and info["config"]["parallel"] == 2
    records = [r for r in journal(run) if r["final"]]
    assert [r["iteration"] for r in records] == [1, 2, 3, 4, 5] and all(r["status"] == "ok" for r in records)
    metrics = {r["iteration"]: json.loads((run / f"iter_{r['iteration']:03d}" / "metrics.json").read_text())
               for r in records}
    assert all(m["config"]["executor"] == "ray" and m["config"]["node"] for m in metrics.values())
    assert all(r["slot"].endswith(" on " + metrics[r["iteration"]]["config"]["node"]) for r in records[:-1])
    assert len([n for n, m in metrics.items() if m["config"].get("lost_workers")]) == 1, \
        "exactly the candidate whose worker was killed ran twice"
    # Scored here from the returned predictions: the same figure the files give.
    from scores import run_accuracy

    shown = json.loads(cli("show", run, "--json").stdout)
    best = shown["best"]["iteration"]
    assert shown["best"]["val_accuracy"] == pytest.approx(run_accuracy(run, best, "val"), abs=1e-4)
    assert (run / "best" / "ITERATION").read_text().strip() == str(best)
    assert shown["final"]["kind"] == "refit" and (run / "final" / "model.pt").is_file()
    assert ray_tasks() == []


def test_sigkill_of_fit_on_ray_leaves_no_task_or_sandbox_and_resume_finishes(cli, fmnist40, tmp_path):
    ws, node = tmp_path / "ws", tmp_path / "node"
    env = {**os.environ, "AUTOMODEL_NODE_DIR": str(node)}
    proc = subprocess.Popen(FIT + fit_args(fmnist40, ws, "k", iters=4, seconds=5), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=REPO, env=env)
    run = ws / "k"
    deadline = time.time() + 300
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        if (run / "iter_003").is_dir() and len(training_on_node(node)) == 2:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the first round never had two candidates training")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(100):  # Ray's processes share the fate of the driver that started them
        if not ray_tasks() and not processes_mentioning(str(node)):
            break
        time.sleep(0.2)
    assert ray_tasks() == [] and processes_mentioning(str(node)) == []
    before = (run / "journal.jsonl").read_text()
    assert [j["iteration"] for j in json.loads((run / "run.json").read_text())["pending_round"]] == [2, 3]
    res = cli("resume", run, env={"AUTOMODEL_NODE_DIR": str(node)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert (run / "journal.jsonl").read_text().startswith(before)
    records = [r for r in journal(run) if r["final"]]
    assert [r["iteration"] for r in records] == [1, 2, 3, 4] and records[-1]["kind"] == "refit"
    assert ray_tasks() == []


def test_ray_options_are_checked_before_a_run_starts(cli, fmnist40, tmp_path):
    res = cli("fit", fmnist40, "--ray-address", "auto", "--workspace", tmp_path)
    assert res.returncode == 2 and "add --executor ray" in res.stderr and "Traceback" not in res.stderr
    assert not any(tmp_path.iterdir())
