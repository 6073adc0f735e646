"""A sandboxed child's whole process tree, found through /proc: measured and killed together.

Processes are remembered by (pid, start time), so one that re-parented
itself (setsid, double fork) after being seen once is still found, and a
recycled pid is never hit. Memory is the tree's proportional set size plus
what it keeps in the RAM-backed file systems of its sandbox (/tmp, /dev/shm),
which no process's own figure counts.
"""

from __future__ import annotations

import os
import signal
import time

# RAM-backed folders a sandbox may write into; their usage is memory the tree holds.
TMPFS_MOUNTS = ("tmp", "dev/shm")


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, pgid, starttime) of a living `pid`; None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2:].split()  # the command name may contain spaces and ')'
    if not rest or rest[0] in ("Z", "X"):
        return None  # dead: nothing left to kill or to measure
    try:
        return int(rest[1]), int(rest[2]), int(rest[19])
    except (IndexError, ValueError):
        return None


def all_pids() -> list[int]:
    try:
        return [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return []


def user_tasks(uid: int) -> int:
    """Processes and threads owned by `uid` now (what RLIMIT_NPROC counts)."""
    count = 0
    for pid in all_pids():
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return count


def _memory_bytes(pid: int) -> int:
    """Proportional set size (shared pages split between sharers, so forked
    DataLoader workers are not counted twice), else resident set size."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and of its children it has reaped (user + system), in seconds."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("ascii", "replace")
        fields = raw[raw.rfind(")") + 2:].split()
        return sum(int(v) for v in fields[11:15]) / _TICKS  # utime stime cutime cstime
    except (OSError, ValueError, IndexError):
        return 0.0


def machine_cpu() -> dict[str, int]:
    """The machine's CPU time counters (/proc/stat, clock ticks): total and steal (taken by the hypervisor)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return {"total": 0, "steal": 0}
    return {"total": sum(values[:8]), "steal": values[7] if len(values) > 7 else 0}


def _tmpfs_bytes(pids: list[int]) -> int:
    """Bytes used in the private /tmp and /dev/shm the processes see (each file system counted once).

    Read through /proc/PID/root, so a bwrap sandbox's own RAM-backed mounts are
    measured from outside; the host's are skipped (not the tree's to answer for)."""
    host = set()
    for mount in TMPFS_MOUNTS:
        try:
            host.add(os.stat(f"/{mount}").st_dev)
        except OSError:
            pass
    seen: set[int] = set()
    total = 0
    for pid in pids:
        for mount in TMPFS_MOUNTS:
            path = f"/proc/{pid}/root/{mount}"
            try:
                dev = os.stat(path).st_dev
                if dev in seen or dev in host:
                    continue
                seen.add(dev)
                vfs = os.statvfs(path)
            except OSError:
                continue
            total += (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize
    return total


class ProcessTree:
    """Every process descended from one root (see the module docstring)."""

    def __init__(self, root_pid: int):
        self.root = root_pid
        self.seen: dict[int, int] = {}   # pid -> starttime
        self._groups: set[int] = set()   # process groups of the last scan
        root = _stat(root_pid)
        if root:
            self.seen[root_pid] = root[2]

    def scan(self) -> list[int]:
        """Living descendants (root included); adds them to `seen`."""
        table = {}
        for pid in all_pids():
            st = _stat(pid)
            if st:
                table[pid] = st
        children: dict[int, list[int]] = {}
        for pid, (ppid, _pgid, _start) in table.items():
            children.setdefault(ppid, []).append(pid)
        # Seen processes count as roots too: an orphan re-parented to init is
        # still ours if its start time matches (a recycled pid has another).
        alive = []
        stack = [p for p, start in self.seen.items() if p in table and table[p][2] == start]
        visited = set()
        self._groups = set()
        while stack:
            pid = stack.pop()
            if pid in visited:
                continue
            visited.add(pid)
            alive.append(pid)
            self._groups.add(table[pid][1])
            self.seen.setdefault(pid, table[pid][2])
            stack.extend(children.get(pid, ()))
        return alive

    def usage(self) -> tuple[int, int, float]:
        """(bytes of memory held, processes alive, CPU seconds used) of the whole tree, RAM-backed files included.

        The CPU figure adds each living process's own time and that of the children it reaped, so a
        DataLoader worker that has exited is still counted (through its parent) and none twice."""
        alive = self.scan()
        memory = sum(_memory_bytes(pid) for pid in alive) + _tmpfs_bytes(alive)
        return memory, len(alive), sum(_cpu_seconds(pid) for pid in alive)

    def memory_bytes(self) -> int:
        return self.usage()[0]

    def kill(self) -> None:
        """SIGKILL every process of the tree and wait until none is left."""
        for _ in range(50):
            alive = self.scan()
            if not alive:
                return
            # Stop first so nothing forks between the scan and the kill.
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                for pid in alive:
                    start = self.seen.get(pid)
                    st = _stat(pid)
                    if st and start == st[2]:
                        try:
                            os.kill(pid, sig)
                        except OSError:
                            pass
            if self.root in self._groups:  # the session's group, while one of ours is in it
                try:
                    os.killpg(self.root, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.02)
