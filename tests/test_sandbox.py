"""The sandbox against hostile pipelines: real bubblewrap, real processes, real sockets."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from hostile.kit import fashion_bundle, fast_config, make_iter, processes_with, report, require_bwrap, scored_accuracy
from needs import need_level

from automodel.sandbox import levels, probe
from automodel.sandbox.iteration import run_iteration
from automodel.sandbox.limits import Slot
from automodel.sandbox.supervisor import run_child


@pytest.fixture(scope="module")
def fm(materialize, tmp_path_factory):
    return fashion_bundle(materialize, tmp_path_factory.mktemp("run") / "data")


def test_bwrap_command_drops_capabilities_and_clears_the_environment(tmp_path):
    req = levels.Request(
        argv=("python", "x.py"),
        cwd=Path("/sandbox/iter"),
        stdout=tmp_path / "o",
        stderr=tmp_path / "e",
        env={"PATH": "/usr/bin"},
    )
    cmd = levels.build_command("bwrap", req)
    for flag in (
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
    ):
        assert flag in cmd
    assert cmd[cmd.index("--cap-drop") + 1] == "ALL"
    assert cmd[-3:] == ["--", "python", "x.py"]


def test_forcing_an_unknown_level_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(levels.ENV_FORCE, "docker")
    with pytest.raises(levels.SandboxError, match="bwrap, unshare, none"):
        probe.choose_level()


@pytest.mark.parametrize("level", ["bwrap", "unshare", "none"])
def test_child_gets_a_minimal_environment(level, tmp_path, monkeypatch):
    need_level(level)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-should-not-leak")
    out = tmp_path / "out.txt"
    script = "import os, sys; print(sorted(os.environ)); print(os.environ.get('OPENAI_API_KEY'))"
    if level == "bwrap":
        mounts = tuple(levels.python_mounts(()))
        cwd = Path("/tmp")
    else:
        mounts, cwd = (), tmp_path
    req = levels.Request(
        argv=(sys.executable, "-c", script),
        cwd=cwd,
        stdout=out,
        stderr=tmp_path / "err.txt",
        mounts=mounts,
        env=levels.base_env(1),
    )
    outcome = run_child(req, level, Slot(threads=1), deadline=lambda now, launched: ("run", launched + 60))
    assert outcome.exit_code == 0, (tmp_path / "err.txt").read_text()
    text = out.read_text()
    assert "sk-secret" not in text and "OPENAI_API_KEY" not in text
    assert "OMP_NUM_THREADS" in text


def test_label_search_finds_nothing_and_scores_at_chance(fm, tmp_path):
    require_bwrap()
    ds, bundle = fm
    it = make_iter(
        tmp_path / "iter",
        {"train": "train_label_search.py"},
        hostile={
            "dataset": str(ds.root),
            "run_dir": str(bundle.dir.parent),
            "labels_file": str(next(ds.root.rglob("*.png"))),
            "bundle_guesses": [str(bundle.dir / "val_x.npy")],
        },
    )
    result = run_iteration(it, bundle, fast_config(sandbox="bwrap"))
    assert result.status == "ok", result.error
    found = report(it)
    assert found["found"] == [], found
    assert found["saw_python"]  # it did walk the filesystem it could see
    assert set(found["attempts"]) >= {"dataset", "run_dir", "labels_file"}
    truth = scored_accuracy(it / "probs_val.npy", bundle.val_y)
    assert result.val_accuracy == pytest.approx(truth, abs=1e-6)
    assert result.val_accuracy <= 0.2  # constant predictions: one class of ten


def test_writes_outside_and_network_fail_under_bwrap(fm, tmp_path):
    require_bwrap()
    ds, bundle = fm
    token = uuid.uuid4().hex
    outside = tmp_path / "outside" / f"pwned-{token}"
    (tmp_path / "outside").mkdir()
    # Host paths: writing there "works" at best in the sandbox's private tmpfs, never on the host.
    targets = [
        str(ds.root / f"pwned-{token}.txt"),
        str(outside),
        f"/tmp/pwned-{token}",
        str(Path.home() / f"pwned-{token}"),
        str(bundle.dir / f"pwned-{token}"),
    ]
    # Paths that exist inside the sandbox read-only: the system, the data bundle, its own sources.
    readonly = [
        f"/usr/pwned-{token}",
        f"{levels.INSIDE_DATA}/pwned-{token}",
        f"{levels.INSIDE_DATA}/train_y.npy",
        "train.py",
    ]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.2)
    accepted = []

    def accept():
        end = time.monotonic() + 60
        while time.monotonic() < end and not stop.is_set():
            try:
                conn, _ = listener.accept()
                accepted.append(conn.recv(100))
                conn.close()
            except OSError:
                pass

    stop = threading.Event()
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    it = make_iter(
        tmp_path / "iter",
        {"train": "train_escape.py"},
        hostile={
            "write_targets": targets + readonly,
            "local_port": listener.getsockname()[1],
            "remount_targets": ["/", "/usr", str(levels.INSIDE_DATA)],
        },
    )
    source = (it / "train.py").read_bytes()
    try:
        result = run_iteration(it, bundle, fast_config(sandbox="bwrap"))
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        leaked = [t for t in targets if os.path.exists(t)]
        for t in leaked:
            os.unlink(t)
    assert result.status == "ok", result.error
    assert leaked == []
    assert accepted == []
    rep = report(it)
    assert all(rep["writes"][path] != "written" for path in readonly), rep
    assert int(rep["cap_eff"], 16) == 0, rep  # no capabilities, also when the tests run as root
    assert "remounted" not in rep["remounts"].values(), rep
    assert (it / "train.py").read_bytes() == source
    assert not any(p.name.startswith("pwned") for p in bundle.dir.iterdir())
    assert rep["connects"]["local"] != "connected" and rep["connects"]["public"] != "connected", rep


@pytest.mark.parametrize(
    "level, phase", [("bwrap", "train"), ("unshare", "train"), ("none", "train"), ("bwrap", "preflight")]
)
def test_endless_loop_is_killed_with_its_whole_process_tree(fm, tmp_path, capfd, level, phase):
    """train() ignores should_stop and the interrupt, runs DataLoader workers and
    leaves grandchildren (one in a new session): the whole tree must go."""
    need_level(level)
    ds, bundle = fm
    token = f"endless-{uuid.uuid4().hex}"
    it = make_iter(
        tmp_path / "iter", {"train": "train_endless.py"}, hostile={"token": token, "in_preflight": phase == "preflight"}
    )
    config = fast_config(sandbox=level, time_limit=2.0, interrupt_grace=1.0, kill_grace=2.0, preflight_limit=10.0)
    start = time.monotonic()
    result = run_iteration(it, bundle, config)
    elapsed = time.monotonic() - start
    assert result.status == "timeout"
    assert (result.error.phase, result.error.module) == (phase, "train")
    assert "should_stop" in result.error.message
    marker = report(it)["marker"]
    assert marker  # the harness marks the tree, so the check below can find strays
    time.sleep(0.5)
    assert processes_with(token, marker) == []
    assert elapsed < 60
    # Weaker levels say what is missing, in the result and loudly on stderr.
    assert result.sandbox.kind == level
    if level == "bwrap":
        assert result.sandbox.missing == ()
    else:
        assert "filesystem isolation" in result.sandbox.missing
        probe._warned.discard(level)
        probe.warn_if_weak(level)
        assert "WITHOUT filesystem isolation" in capfd.readouterr().err


def test_preflight_that_never_stops_fails_fast_with_a_traceback(fm, tmp_path):
    ds, bundle = fm
    it = make_iter(tmp_path / "iter", {"train": "train_no_stop.py"})
    result = run_iteration(it, bundle, fast_config(preflight_limit=10.0, time_limit=300.0))
    assert result.status == "failed", (result.error, result.timings)
    assert (result.error.phase, result.error.module) == ("preflight", "train")
    assert "ctx.should_stop()" in result.error.message
    tb = result.error.traceback
    assert "train.py" in tb and "TrainingOverran" in tb  # where train() was when it was stopped
    assert result.timings["total"] < 30


def test_memory_hog_is_stopped_as_oom(fm, tmp_path):
    ds, bundle = fm
    it = make_iter(tmp_path / "iter", {"train": "train_memory_hog.py"})
    result = run_iteration(it, bundle, fast_config(memory_limit=1536 * 2**20, time_limit=60.0))
    assert result.status == "oom"
    assert "GiB" in result.error.message and result.error.module == "train"
    assert result.peak_memory_mb > 1500


def test_dataloader_workers_run_inside_bwrap(fm, tmp_path):
    """Worker processes need /dev/shm and fork: both must work in the sandbox."""
    require_bwrap()
    ds, bundle = fm
    it = make_iter(tmp_path / "iter")
    result = run_iteration(it, bundle, fast_config(sandbox="bwrap", loader_workers=2))
    assert result.status == "ok", (result.error, (it / "stderr.txt").read_text()[-2000:])
    assert result.val_accuracy == pytest.approx(scored_accuracy(it / "probs_val.npy", bundle.val_y), abs=1e-6)
