"""The one process supervisor: start a sandboxed child in its slot, watch it, kill all of it.

Every child automodel starts (an iteration's training and prediction, predict,
export, the sandbox probe) goes through `run_child`:

    outcome = run_child(request, level, slot, work=folder, deadline=lambda now, launched: ("run", launched + 60))

It enforces, from this process's own clock and measurements only (nothing the
child writes is believed): the deadline the caller's `deadline(now)` returns
(the caller may move it as the child reports progress; see iteration.py),
the slot's memory (processes plus their RAM-backed files), process count,
work-folder size and file count, and a size cap on each log that keeps its
head and tail. When the child ends or a limit is hit, the whole process tree
is killed. The `ChildOutcome` says honestly why it ended.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from automodel.files import walk_entries
from automodel.sandbox.levels import Request, build_command
from automodel.sandbox.limits import Cgroup, Slot, kernel_oom_kills, rlimits
from automodel.sandbox.proctree import ProcessTree, machine_cpu

POLL = 0.1               # s between checks of exit, deadline and logs
MEMORY_EVERY = 0.25      # s between scans of the process tree (memory, process count)
DISK_EVERY = 1.0         # s between walks of the work folder
REASONS = ("exited", "timeout", "memory", "processes", "disk", "files")
# Set to stop every supervised child of this process at its next poll (a round of parallel candidates
# cancelled by an error or Ctrl-C in another thread): run_child kills the child's tree and raises.
_CANCEL = threading.Event()


_PR_SET_PDEATHSIG = 1
try:  # loaded here, not in the forked child, where nothing may be loaded or allocated
    _LIBC: "ctypes.CDLL | None" = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except OSError:
    _LIBC = None


class ChildCancelled(Exception):
    """run_child was told to stop (cancel_children); the child's tree is gone."""


def cancel_children() -> None:
    _CANCEL.set()


def allow_children() -> None:
    _CANCEL.clear()


def signal_name(code: int | None) -> str | None:
    """SIGKILL for an exit status of -9 (or 137 from a shell), None for a normal exit."""
    if code is None:
        return None
    sig = -code if code < 0 else code - 128 if 128 < code < 160 else None
    if sig is None:
        return None
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


@dataclass(frozen=True)
class Sample:
    """One measurement of a child: when, its tree's CPU seconds, the machine's CPU counters."""

    time: float
    cpu: float
    machine: dict[str, int]


@dataclass(frozen=True)
class ChildOutcome:
    """How a supervised child ended, measured by the parent."""

    reason: str                      # exited | timeout | memory | processes | disk | files
    exit_code: int | None
    stage: str                       # the caller's stage name when it ended
    started: float                   # time.time() at launch
    seconds: float                   # launch to end, parent clock
    peak_memory: int                 # bytes: processes plus RAM-backed files, highest seen
    peak_processes: int
    disk_used: int                   # bytes in the work folder at the last walk
    oom_kills: int                   # kernel OOM kills during the run (in its cgroup, else machine-wide)
    forks_refused: int               # forks the kernel refused at the cgroup's process cap
    limits: str                      # how the limits were enforced (cgroup or watchdog)
    logs_dropped: dict[str, int] = field(default_factory=dict)   # log file name -> bytes cut out of its middle
    message: str = ""                # why a limit stopped it, for people and repair prompts
    stage_samples: dict[str, "Sample"] = field(default_factory=dict)  # the first measurement in each stage
    last_sample: "Sample | None" = None                                # the last measurement before the end

    def compute(self, stage: str, cores: int) -> dict[str, float]:
        """CPU use from `stage` to the end, measured here: utilisation of `cores`, and the share of the
        machine's CPU time its hypervisor took (steal) meanwhile. {} when there is too little to measure."""
        first, last = self.stage_samples.get(stage), self.last_sample
        if first is None or last is None or last.time - first.time < 0.5:
            return {}
        wall = last.time - first.time
        total = last.machine["total"] - first.machine["total"]
        steal = last.machine["steal"] - first.machine["steal"]
        return {"cpu_seconds": round(last.cpu - first.cpu, 2), "cpu_utilisation": round((last.cpu - first.cpu) / wall
                / max(1, cores), 3), "steal_share": round(steal / total, 3) if total > 0 else None}

    @property
    def signal(self) -> str | None:
        return signal_name(self.exit_code)


class LogPump:
    """Drains one output pipe of the child into a log file capped at `limit` bytes.

    The child writes into a pipe, never into the file: this thread copies what
    arrives to the file until it holds `limit` bytes, then keeps only the most
    recent bytes in memory; `finish` leaves the first and the last `limit / 2`
    bytes with a line saying how much was cut between them. A pipe that is
    always drained cannot block the child, and nothing can be lost to a race."""

    CHUNK = 1 << 16

    def __init__(self, path: Path, limit: int):
        self.path, self.limit = Path(path), max(1024, limit)
        self.read_fd, self.write_fd = os.pipe()
        self.written = 0             # bytes of this child's output in the file
        self.recent = bytearray()    # once the file is full: the newest bytes, at most limit // 2
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        os.close(self.write_fd)      # the child holds its own copy; EOF comes when every writer is gone
        self._thread.start()

    def _run(self) -> None:
        half = self.limit // 2
        with open(self.path, "ab") as out:
            while chunk := os.read(self.read_fd, self.CHUNK):
                room = self.limit - self.written
                if room > 0:
                    out.write(chunk[:room])
                    out.flush()
                    self.written += min(room, len(chunk))
                    chunk = chunk[room:]
                if chunk:
                    self.recent += chunk
                    if len(self.recent) > half:
                        self.dropped += len(self.recent) - half
                        del self.recent[:len(self.recent) - half]
        os.close(self.read_fd)

    def finish(self, timeout: float = 10.0) -> None:
        """Wait for the pipe to close (the tree is dead by now), then cut the middle out if it overflowed."""
        self._thread.join(timeout)
        if not self.recent:
            return
        half = self.limit // 2
        with open(self.path, "r+b") as fh:
            fh.seek(0, os.SEEK_END)
            start = fh.tell() - self.written     # where this child's output began (the file may hold earlier logs)
            fh.seek(start + half)
            cut_from_file = self.written - half
            fh.truncate()
            note = (f"\n[... automodel cut {self.dropped + cut_from_file} bytes here: each log keeps the first and "
                    f"the last {half} bytes of a child's output ...]\n")
            fh.write(note.encode() + bytes(self.recent))
        self.dropped += cut_from_file


def _work_usage(work: Path | None, max_files: int) -> tuple[int, int]:
    """(bytes, entries) in the work folder, counting at most max_files + 1 entries."""
    if work is None:
        return 0, 0
    total = entries = 0
    for _path, info in walk_entries(work, max_files + 1):
        entries += 1
        total += getattr(info, "st_blocks", 0) * 512
    return total, entries


def start(request: Request, level: str, slot: Slot, stdout: int, stderr: int,
          cgroup: Cgroup | None = None) -> tuple[subprocess.Popen, float]:
    """Start `request` at isolation `level` in its own session, its output into the descriptors given."""
    if slot.gpu is not None:  # the slot's GPU(s), whatever the parent sees
        request = replace(request, env={**request.env, "CUDA_VISIBLE_DEVICES": slot.gpu})
    cmd = build_command(level, request)
    env = dict(request.env)
    if request.marker:
        env["AUTOMODEL_SANDBOX_ID"] = request.marker
        if level == "bwrap":
            i = cmd.index("--clearenv") + 1
            cmd = cmd[:i] + ["--setenv", "AUTOMODEL_SANDBOX_ID", request.marker] + cmd[i:]
    cwd = request.cwd if level != "bwrap" else "/"
    limits = rlimits(slot)

    def preexec() -> None:  # in the forked child, before exec: no allocation-heavy work here
        if cgroup is not None and cgroup.kind:
            cgroup.preexec()
        for res, value in limits:
            resource.setrlimit(res, (value, value))
        if _LIBC is not None:
            # SIGKILL the launcher when the thread that started it dies (a SIGKILLed `fit`, a round's worker
            # thread): bwrap has --die-with-parent, but unshare and the bare level would outlive it.
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    started = time.time()
    popen = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, cwd=cwd,
        env=env if level != "bwrap" else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        start_new_session=True, preexec_fn=preexec, close_fds=True,
    )
    return popen, started


def run_child(request: Request, level: str, slot: Slot, *, deadline: Callable[[float, float], tuple[str, float]],
              work: Path | None = None, on_poll: Callable[[], None] | None = None) -> ChildOutcome:
    """Run `request` to its end under the slot's limits; never raises for what the child does.

    `deadline(now, launched)` returns (stage name, absolute time.time() deadline)
    and is asked at every poll; `on_poll` lets the caller read the child's progress."""
    cgroup = Cgroup(slot)
    oom_before = cgroup.oom_kills() if cgroup.kind else kernel_oom_kills()
    logs = [LogPump(request.stdout, slot.log_bytes), LogPump(request.stderr, slot.log_bytes)]
    try:
        popen, started = start(request, level, slot, logs[0].write_fd, logs[1].write_fd, cgroup)
    finally:
        for log in logs:
            log.start()
    tree = ProcessTree(popen.pid)
    limit = slot.memory_bytes()
    peak = peak_procs = disk = 0
    next_mem = next_disk = 0.0
    cpu = 0.0
    stages: dict[str, Sample] = {}   # the first sample taken in each stage
    last_sample: Sample | None = None
    reason, message, code, stage = "exited", "", None, ""
    try:
        while True:
            try:
                code = popen.wait(timeout=POLL)
            except subprocess.TimeoutExpired:
                code = None
            if on_poll:
                on_poll()
            if _CANCEL.is_set():
                raise ChildCancelled("cancelled: another candidate of the round failed, or the run was stopped")
            now = time.time()
            stage, end = deadline(now, started)
            if code is not None:
                break
            if now >= next_mem:
                next_mem = now + MEMORY_EVERY
                used, procs, cpu_now = tree.usage()
                peak, peak_procs = max(peak, used), max(peak_procs, procs)
                cpu = max(cpu, cpu_now)
                last_sample = Sample(now, cpu, machine_cpu())
                stages.setdefault(stage, last_sample)
                if used > limit:
                    reason, message = (
                        "memory",
                        (
                            f"the pipeline's processes held {used / 2**30:.1f} GiB (RAM-backed files in /tmp "
                            f"and /dev/shm included), more than the limit of {limit / 2**30:.1f} GiB, and were "
                            "killed. Use a smaller batch size, model or number of DataLoader workers."
                        ),
                    )
                    break
                if procs > slot.max_processes:
                    reason, message = (
                        "processes",
                        (
                            f"the pipeline started {procs} processes, more than the {slot.max_processes} "
                            "allowed, and was killed. Do not start processes in a loop; use at most a "
                            "few DataLoader workers."
                        ),
                    )
                    break
            if work is not None and now >= next_disk:
                next_disk = now + DISK_EVERY
                disk, entries = _work_usage(work, slot.max_files)
                if entries > slot.max_files:
                    reason, message = (
                        "files",
                        (
                            f"the pipeline created more than {slot.max_files} files or folders in its "
                            "working folder and was killed. Write a few checkpoint files at most."
                        ),
                    )
                    break
                if disk > slot.disk:
                    reason, message = (
                        "disk",
                        (
                            f"the pipeline wrote {disk / 2**30:.1f} GiB into its working folder, more than "
                            f"the limit of {slot.disk / 2**30:.1f} GiB, and was killed. Save fewer or "
                            "smaller checkpoints."
                        ),
                    )
                    break
            if now >= end:
                reason = "timeout"
                break
    finally:
        tree.kill()  # strays (a background `sleep`, workers) go too, also after a normal exit
        try:
            code = popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for log in logs:
            log.finish()
        oom_after = cgroup.oom_kills() if cgroup.kind else kernel_oom_kills()
        refused = cgroup.pids_refused()
        cgroup.close()
    ended = time.time()
    if work is not None:
        disk = _work_usage(work, slot.max_files)[0] if reason == "exited" else disk
    return ChildOutcome(
        reason=reason, exit_code=code, stage=stage, started=started, seconds=round(ended - started, 4),
        peak_memory=peak, peak_processes=peak_procs, disk_used=disk, oom_kills=max(0, oom_after - oom_before),
        forks_refused=refused, limits=f"{cgroup.describe()}; watchdog: memory, processes, disk, logs",
        logs_dropped={log.path.name: log.dropped for log in logs if log.dropped}, message=message,
        stage_samples=stages, last_sample=last_sample,
    )
