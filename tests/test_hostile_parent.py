"""Hostile generated code against the trusted side: it must never crash, stall or starve it.

Each module in tests/hostile/ attacks the parent, not the sandbox walls: names
of trusted files, a tree 1,500 levels deep, a forged "training is over" event,
RAM hidden in /tmp and /dev/shm, a flood of output, a fork bomb, a self-kill.
Everything is checked from outside: the parent survives and records the
iteration, `fit` and `resume` go on, the limit stops the module with the right
reason, the host gets its memory and processes back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hostile.kit import (
    REFERENCE,
    HostSampler,
    fashion_bundle,
    fast_config,
    make_iter,
    meminfo_kb,
    process_count,
    report,
    require_bwrap,
    scored_accuracy,
)

from automodel.sandbox.child_files import EventLog
from automodel.sandbox.iteration import run_iteration
from automodel.testing.replay_server import ReplayServer

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@pytest.fixture(scope="module")
def fm(materialize, tmp_path_factory):
    return fashion_bundle(materialize, tmp_path_factory.mktemp("run") / "data")


# --------------------------------------------------------------- through run_iteration

def test_directories_with_trusted_names_do_not_crash_the_parent(fm, tmp_path):
    ds, bundle = fm
    it = make_iter(tmp_path / "iter", {"train": "train_trusted_names.py"})
    for _ in range(2):  # and again in the same folder, as a repair would
        result = run_iteration(it, bundle, fast_config())
        assert result.status == "ok", result.error
        assert json.loads((it / "metrics.json").read_text())["status"] == "ok"
        assert result.val_accuracy == pytest.approx(scored_accuracy(it / "probs_val.npy", bundle.val_y), abs=1e-6)
    assert (it / "metrics.json").is_file() and not (it / "summary.json").exists() and not (it / "attempt_1").exists()
    assert not any(p.is_symlink() for p in it.iterdir())


def test_a_tree_1500_levels_deep_is_removed_without_recursion(fm, tmp_path):
    ds, bundle = fm
    it = make_iter(tmp_path / "iter", {"train": "train_deep_tree.py"}, hostile={"depth": 1500})
    result = run_iteration(it, bundle, fast_config())
    assert result.status == "ok", result.error
    assert sorted(p.name for p in it.iterdir() if p.is_dir()) == []  # its work folder is gone, deep tree and all


def test_a_forged_event_does_not_stretch_training(fm, tmp_path):
    """train() claims it is done at once, ignores the interrupt and trains for 100 s on a 4 s budget."""
    ds, bundle = fm
    it = make_iter(tmp_path / "iter", {"train": "train_forged_event.py"}, hostile={"seconds": 100})
    config = fast_config(time_limit=4.0, interrupt_grace=1.0, kill_grace=2.0)
    started = time.monotonic()
    result = run_iteration(it, bundle, config)
    elapsed = time.monotonic() - started
    assert result.status == "timeout" and result.error.phase == "train", result.error
    budget = config.time_limit + config.grace() + config.kill_grace
    # The parent's clock: training lasted the budget and the graces, not the 100 s the module wanted.
    assert budget - 0.5 <= result.timings["training"] <= budget + 2.0, result.timings
    assert elapsed < 40


def test_event_stamps_outside_what_the_parent_saw_are_clamped(tmp_path):
    """A stage boundary is the child's stamp only inside [launch, the moment the parent read it]."""
    path = tmp_path / "events.jsonl"
    launched = time.time() - 5.0
    honest = launched + 2.0
    path.write_text("".join(json.dumps(rec) + "\n" for rec in (
        {"phase": "contract_ok", "wall": honest},
        {"phase": "preflight_ok", "wall": 0.0},                   # before the child was started
        {"phase": "train_start", "wall": time.time() + 3600},     # an hour in the future
    )))
    log = EventLog(path)
    log.poll()
    assert log.when("contract_ok", launched) == honest
    assert log.when("preflight_ok", launched) == launched
    assert log.when("train_start", launched) == log.seen_at["train_start"] <= time.time()
    assert log.when("train_done", launched) is None


def test_memory_hidden_in_ram_backed_files_counts_against_the_limit(fm, tmp_path):
    require_bwrap()
    ds, bundle = fm
    it = make_iter(tmp_path / "iter", {"train": "train_tmpfs_hog.py"}, hostile={"gb": 2})
    before = meminfo_kb("Shmem")
    with HostSampler() as host:
        result = run_iteration(it, bundle, fast_config(sandbox="bwrap", memory_limit=1536 * 2**20, time_limit=30.0))
    assert result.status == "oom", result.error
    assert result.error.module == "train" and result.error.type == "OutOfMemory"
    assert host.peak_shmem - before < 3 * 2**20  # never near the 6 GB the module asked for
    time.sleep(0.5)
    assert meminfo_kb("Shmem") - before < 256 * 2**10  # and all of it was given back


def test_logs_are_capped_keeping_head_and_tail(fm, tmp_path):
    ds, bundle = fm
    it = make_iter(tmp_path / "iter", {"train": "train_log_flood.py"}, hostile={"mb": 200})
    limit = 2 * 2**20
    result = run_iteration(it, bundle, fast_config(log_limit=limit, time_limit=3.0))
    assert result.status == "ok", result.error
    for name in ("stdout.txt", "stderr.txt"):
        text = (it / name).read_text()
        assert (it / name).stat().st_size < limit + 4096
        assert "LAST LINE OF THE FLOOD" in text and "automodel cut" in text
        assert result.logs_truncated[name] > 190 * 2**20
    assert "FIRST LINE OF THE FLOOD" in (it / "stdout.txt").read_text()
    assert json.loads((it / "metrics.json").read_text())["logs_truncated"]["stdout.txt"] > 0


def test_a_fork_bomb_is_stopped_by_the_process_limit(fm, tmp_path):
    ds, bundle = fm
    it = make_iter(tmp_path / "iter", {"train": "train_fork_bomb.py"}, hostile={"n": 10_000})
    before = process_count()
    with HostSampler() as host:
        result = run_iteration(it, bundle, fast_config(max_processes=200, time_limit=30.0))
    assert result.status == "failed" and result.error.type == "ProcessLimit", result.error
    assert "processes" in result.error.message
    assert host.peak_processes - before < 1500
    time.sleep(0.5)
    assert sum(1 for n in os.listdir("/proc") if n.isdigit()) - before < 20  # none left behind


def test_a_self_kill_is_not_called_out_of_memory(fm, tmp_path):
    ds, bundle = fm
    it = make_iter(tmp_path / "iter", {"train": "train_self_kill.py"})
    result = run_iteration(it, bundle, fast_config())
    assert result.status == "failed" and result.error.type == "Killed", result.error
    assert "SIGKILL" in result.error.message and "not by automodel's limits" in result.error.message


def test_writes_to_the_sandbox_root_are_refused(fm, tmp_path):
    require_bwrap()
    ds, bundle = fm
    it = make_iter(tmp_path / "iter", {"train": "train_tmpfs_hog.py"}, hostile={"gb": 0.1})
    result = run_iteration(it, bundle, fast_config(sandbox="bwrap", time_limit=2.0))
    found = report(it)
    assert "Read-only file system" in found["/"]
    assert result.status == "ok" and result.interrupted  # it then sleeps past its budget and is interrupted


# --------------------------------------------------------------- through fit and resume

def _architect_reply(train_file: str, hostile: dict | None = None) -> str:
    """An LLM's architect reply: the reference pipeline with one hostile train.py."""
    source = (HERE / "hostile" / train_file).read_text()
    if hostile is not None:
        source = f"HOSTILE_CONFIG = {hostile!r}\n" + source
    parts = ["Here is the pipeline."]
    for module, text in (("data", (REFERENCE / "data.py").read_text()), ("model", (REFERENCE / "model.py").read_text()),
                         ("train", source)):
        parts.append(f"### {module}.py\n```python\n{text}\n```")
    return "\n\n".join(parts)


def _script(train_file: str, hostile: dict | None = None) -> list[dict]:
    return [
        {"role": "architect", "reply": _architect_reply(train_file, hostile)},
        {"role": "summarizer", "reply": '{"data": "reference", "model": "reference", "train": "hostile"}'},
        {
            "role": "analyst",
            "reply": '{"target": "train", "instruction": "Keep everything; retrain.", "reason": "check"}',
        },
        {"role": "train_engineer", "reply": "```python\n" + (REFERENCE / "train.py").read_text() + "\n```"},
    ]


def cli(*args, timeout=600):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return subprocess.run(
        [sys.executable, "-m", "automodel.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "train_file, hostile", [("train_trusted_names.py", None), ("train_deep_tree.py", {"depth": 1500})]
)
def test_fit_and_resume_survive_what_the_module_leaves(materialize, tmp_path, train_file, hostile):
    data = materialize("fashion-mnist", "imagefolder", 20)
    with ReplayServer(_script(train_file, hostile)) as server:
        fit = cli(
            "fit",
            data,
            "--agent",
            "llm",
            "--base-url",
            server.base_url,
            "--iters",
            1,
            "--time-per-iter",
            5,
            "--workspace",
            tmp_path,
            "--name",
            "r",
        )
        assert fit.returncode == 0, fit.stderr[-3000:]
        run = tmp_path / "r"
        first = [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]
        assert [r["status"] for r in first] == ["ok"]
        # A kill mid-iteration leaves a hostile tree in an unfinished iteration: resume must clear it.
        leftover = run / "iter_002" / "work"
        leftover.mkdir(parents=True)
        fd = os.open(leftover, os.O_RDONLY)
        for _ in range(1500):
            os.mkdir("d", dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        os.close(fd)
        resume = cli("resume", run, "--iters", 2)
    assert resume.returncode == 0, resume.stderr[-3000:]
    records = [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if r["final"]] == [1, 2]
    assert all(r["status"] == "ok" for r in records)
