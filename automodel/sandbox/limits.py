"""What one sandboxed child may use, and how each limit is enforced here.

A `Slot` is a child's share of the machine: threads, memory, processes, disk,
log size and an optional GPU. Limits are enforced in layers, the strongest
this machine allows first, and the child's record says which were used:

- a cgroup (v2, else v1) with `memory` and `pids` controllers, where this
  process may create one (root in most containers): the kernel stops a fork
  bomb at the pids cap and charges RAM-backed files (/tmp, /dev/shm) to the
  memory cap, and its OOM count tells an out-of-memory kill from any other;
- rlimits set before exec: no core dumps, a size cap per file, and for a
  non-root user a process cap (root is exempt from RLIMIT_NPROC);
- the supervisor's own watchdog (supervisor.py), always: the tree's memory
  plus its RAM-backed files, its process count, the size of its work folder
  and of its logs, each checked several times a second.
Not RLIMIT_AS: it breaks CUDA, and `import torch` alone needs about 1 GB of it.
"""

from __future__ import annotations

import os
import resource
import uuid
from dataclasses import dataclass
from pathlib import Path

from automodel.sandbox.proctree import user_tasks

NPROC_HEADROOM = 2048     # processes/threads a non-root child's user may add (RLIMIT_NPROC)
CGROUP_ROOT = Path("/sys/fs/cgroup")


def ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8 * 2**30


def memory_share(share: float = 1.0) -> int:
    """Bytes for a child given `share` of what children may use: 75% of this machine's RAM (the rest is
    left to automodel itself and the system)."""
    return int(ram_bytes() * 0.75 * share)


@dataclass(frozen=True)
class Slot:
    """One child's share of the machine. The defaults give one child the whole machine."""

    threads: int = 0                  # torch/OMP threads; 0 = all cores
    memory: int | None = None         # bytes for the whole tree, RAM-backed files included; None = 75% of RAM
    gpu: str | None = None            # CUDA device id(s) the child sees (CUDA_VISIBLE_DEVICES), None = as the parent
    max_processes: int = 1024         # processes alive at once in the tree (a fork bomb stops here)
    disk: int = 8 * 2**30             # bytes the child may keep in its work folder
    log_bytes: int = 20 * 2**20       # stdout/stderr each: beyond this only the head and the tail are kept
    max_files: int = 50_000           # entries in the work folder

    def memory_bytes(self) -> int:
        return self.memory or memory_share()

    def cores(self) -> int:
        return self.threads or os.cpu_count() or 1


def rlimits(slot: Slot) -> list[tuple[int, int]]:
    """(resource, value) pairs applied to the child before exec."""
    limits = [(resource.RLIMIT_CORE, 0)]  # no core dump of a multi-GB model
    file_cap = max(slot.disk, 2**30)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    limits.append((resource.RLIMIT_FSIZE, file_cap if hard == resource.RLIM_INFINITY else min(file_cap, hard)))
    if os.getuid() != 0:  # root is exempt from RLIMIT_NPROC anyway
        _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        cap = user_tasks(os.getuid()) + NPROC_HEADROOM  # stops a fork bomb, not torch's threads
        limits.append((resource.RLIMIT_NPROC, cap if hard == resource.RLIM_INFINITY else min(cap, hard)))
    return limits


class Cgroup:
    """A memory+pids cgroup for one child, or nothing where none can be made here.

    `kind` is "v2", "v1" or "" (none); `reason` says why none. The child joins
    it in `preexec` (between fork and exec, so nothing it starts escapes)."""

    def __init__(self, slot: Slot):
        self.kind = ""
        self.reason = ""
        self.dirs: list[Path] = []
        name = f"automodel-{uuid.uuid4().hex[:12]}"
        # Tasks (threads) count against pids.max: leave torch's threads room.
        pids = str(max(slot.max_processes * 4, 512))
        memory = str(int(slot.memory_bytes() * 1.1))  # a backstop above the watchdog's own limit
        try:
            if self._make_v2(name, memory, pids) or self._make_v1(name, memory, pids):
                return
            self.reason = self.reason or "no cgroup file system with memory and pids controllers is writable here"
        except OSError as err:
            self.close()
            self.kind, self.reason = "", f"cgroup not writable ({err.strerror or err})"

    # ---- creation
    @staticmethod
    def _own(controller: str) -> str | None:
        """This process's cgroup path for `controller` ("" = the v2 unified hierarchy)."""
        try:
            lines = Path("/proc/self/cgroup").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            _, names, path = line.split(":", 2)
            if (controller == "" and names == "") or controller in names.split(","):
                return path
        return None

    def _make_v2(self, name: str, memory: str, pids: str) -> bool:
        own = self._own("")
        base = CGROUP_ROOT / (own or "/").lstrip("/")
        if own is None or not (base / "cgroup.subtree_control").is_file():
            return False
        enabled = (base / "cgroup.subtree_control").read_text().split()
        if not {"memory", "pids"} <= set(enabled):
            self.reason = "the cgroup v2 hierarchy does not delegate memory and pids to this process"
            return False
        folder = base / name
        folder.mkdir()
        self.dirs = [folder]
        (folder / "memory.max").write_text(memory)
        (folder / "memory.swap.max").write_text("0") if (folder / "memory.swap.max").exists() else None
        (folder / "pids.max").write_text(pids)
        self.kind = "v2"
        return True

    def _make_v1(self, name: str, memory: str, pids: str) -> bool:
        mem_own, pids_own = self._own("memory"), self._own("pids")
        mem_base = CGROUP_ROOT / "memory" / (mem_own or "/").lstrip("/")
        pids_base = CGROUP_ROOT / "pids" / (pids_own or "/").lstrip("/")
        if mem_own is None or pids_own is None or not mem_base.is_dir() or not pids_base.is_dir():
            return False
        for base in (mem_base, pids_base):
            folder = base / name
            folder.mkdir()
            self.dirs.append(folder)
        self.dirs[0].joinpath("memory.limit_in_bytes").write_text(memory)
        self.dirs[1].joinpath("pids.max").write_text(pids)
        self.kind = "v1"
        return True

    # ---- use
    def preexec(self) -> None:
        """Join the cgroup; runs in the forked child before exec (no allocation-heavy work)."""
        pid = str(os.getpid())
        for folder in self.dirs:
            with open(folder / "cgroup.procs", "w") as fh:
                fh.write(pid)

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer has killed in this cgroup."""
        files = {"v2": "memory.events", "v1": "memory.oom_control"}
        if not self.kind:
            return 0
        try:
            text = (self.dirs[0] / files[self.kind]).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def pids_refused(self) -> int:
        """How many times the kernel refused a fork because the cgroup's process cap was reached."""
        if not self.kind:
            return 0
        try:
            text = self.dirs[-1].joinpath("pids.events").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "max":
                return int(value)
        return 0

    def close(self) -> None:
        """Remove the cgroup (its processes are gone by now); never raises."""
        for folder in reversed(self.dirs):
            try:
                folder.rmdir()
            except OSError:
                pass
        self.dirs = []

    def describe(self) -> str:
        return f"cgroup {self.kind} (memory and pids)" if self.kind else f"no cgroup ({self.reason})"


def kernel_oom_kills() -> int:
    """The kernel's count of OOM kills on the whole machine (/proc/vmstat), 0 where unknown."""
    try:
        with open("/proc/vmstat", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0
