"""How an untrusted child process is isolated, watched and killed.

Isolation levels, best first (the first that works on this machine is used;
`AUTOMODEL_SANDBOX=bwrap|unshare|none` or `level=` forces one):

1. ``bwrap`` (bubblewrap): new user, pid, network, ipc, uts and mount
   namespaces, all capabilities dropped (needed as root: without
   ``--cap-drop ALL`` sandboxed code can remount / read-write), no network,
   a read-only view of /usr and the Python installation only, a private /tmp,
   the data bundle read-only, the iteration directory read-write and nothing
   else: not the dataset folder, not the run directory (which holds labels),
   not the home directory.
2. ``unshare``: ``unshare -Urn --pid --fork --kill-child --mount-proc``: no
   network and its own pid namespace, but NO filesystem isolation (the code
   can read and write whatever this user can, the dataset's labels included).
3. ``none``: a new session/process group only: NO network and NO filesystem
   isolation.

On every level: the environment is cleared to a minimal one (no API keys leak
in), core dumps are off, file sizes are capped, a non-root user's process
count is capped (fork bombs), output goes to files, the whole process tree is
tracked through /proc (by pid and start time, so a setsid'd grandchild seen
once is still found) and killed together, and the caller's watchdog sums the
tree's memory (a memory rlimit would break CUDA). Level ``none`` can miss a
process that double-forks between two scans; levels 1-2 cannot (pid
namespace). Below level 1 a loud warning naming what is unprotected goes to
stderr.

On a GPU (Request.gpu) bwrap also gets the /dev/nvidia* device nodes and a
read-only /sys; /etc/ld.so.cache is bound so CUDA's dlopen finds libcuda.
That path has not been tried on a GPU machine yet.

bwrap's --die-with-parent ties the sandbox to the THREAD that started it:
start it from a thread that outlives the run (the main thread).
"""

from __future__ import annotations

import functools
import glob
import os
import resource
import shutil
import signal
import site
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from automodel.errors import AutomodelError

LEVELS = ("bwrap", "unshare", "none")
ENV_FORCE = "AUTOMODEL_SANDBOX"

# What each level leaves unprotected; reported in IterationResult.sandbox.missing.
MISSING: dict[str, tuple[str, ...]] = {
    "bwrap": (),
    "unshare": ("filesystem isolation",),
    "none": ("filesystem isolation", "network isolation", "pid namespace"),
}

# Where things appear inside a bwrap sandbox (fixed, so no host path leaks in).
INSIDE_ITER = Path("/sandbox/iter")
INSIDE_DATA = Path("/sandbox/data")
INSIDE_CACHE = Path("/sandbox/cache")

# Files of /etc that libraries read (dynamic loader for CUDA's dlopen, time zone,
# locale); the rest of /etc (passwd, ssh, ...) stays out.
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives", "nsswitch.conf", "host.conf")

FILE_SIZE_LIMIT = 16 * 2**30   # bytes: no single file the child writes may exceed this
NPROC_HEADROOM = 2048          # processes/threads the child's user may add (not enforced for root)


def _ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8 * 2**30


def _tmpfs_bytes() -> int:
    """Size cap of the sandbox's private /tmp and /dev/shm (each): a quarter of RAM."""
    return max(2**30, _ram_bytes() // 4)


class SandboxError(AutomodelError):
    """The requested isolation level is not available (message says why and what to do)."""


@dataclass(frozen=True)
class Mount:
    host: Path
    inside: Path
    writable: bool = False


@dataclass(frozen=True)
class Request:
    """One process to start. Paths in argv/cwd/env are as the child sees them (see `Layout`)."""

    argv: tuple[str, ...]
    cwd: Path
    stdout: Path                       # host path, opened by the parent
    stderr: Path
    mounts: tuple[Mount, ...] = ()     # bwrap only; other levels see the host as it is
    ro_files: tuple[Mount, ...] = ()   # read-only files laid over writable mounts (bwrap only)
    env: dict[str, str] = field(default_factory=dict)
    hidden: tuple[Path, ...] = ()      # host paths that must not be visible (dataset, run dir)
    gpu: bool = False
    marker: str | None = None          # extra env var AUTOMODEL_SANDBOX_ID, to find strays


@dataclass(frozen=True)
class Layout:
    """Where the iteration and data directories are, as seen by the child."""

    level: str
    iter_dir: Path
    data_dir: Path
    cache_dir: Path | None


@functools.cache
def _bwrap_has_size() -> bool:
    try:
        out = subprocess.run(["bwrap", "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--size" in (out.stdout + out.stderr)


def _bwrap_base() -> list[str]:
    base = [
        "bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
        "--new-session", "--cap-drop", "ALL", "--proc", "/proc", "--dev", "/dev",
    ]
    # Private /tmp and /dev/shm live in RAM: cap them where this bwrap can.
    for mountpoint in ("/tmp", "/dev/shm"):
        if _bwrap_has_size():
            base += ["--size", str(_tmpfs_bytes()), "--tmpfs", mountpoint]
        else:
            base += ["--tmpfs", mountpoint]
    base += ["--ro-bind", "/usr", "/usr"]
    # /bin, /lib, ... are symlinks into /usr on merged-/usr systems, real dirs elsewhere.
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            base += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            base += ["--ro-bind", str(path), str(path)]
    for name in ETC_FILES:
        path = Path("/etc") / name
        if path.exists():
            base += ["--ro-bind", str(path), str(path)]
    return base


@dataclass(frozen=True)
class Probe:
    """Whether a level can run a real child here: Python starts inside it and
    writes one file into a writable folder, as an iteration's child does."""

    level: str
    works: bool
    reason: str = ""     # why not, in the words of the tool that refused (first line of its stderr)


PROBE_SCRIPT = "import sys; open(sys.argv[1], 'w').write('ok')"


def _probe_request(level: str, folder: Path) -> Request:
    inside = INSIDE_ITER if level == "bwrap" else folder
    return Request(
        argv=(sys.executable, "-I", "-c", PROBE_SCRIPT, str(inside / "probe.txt")), cwd=inside,
        stdout=folder / "stdout.txt", stderr=folder / "stderr.txt",
        mounts=tuple(python_mounts(())) + (Mount(folder, INSIDE_ITER, writable=True),) if level == "bwrap" else (),
        env=base_env(1, home=str(inside), tmp=str(inside)),
    )


@functools.cache
def probe_level(level: str) -> Probe:
    """Try `level` once per process with a tiny real child (see `Probe`)."""
    if level not in LEVELS:
        raise ValueError(level)
    tool = {"bwrap": "bwrap", "unshare": "unshare"}.get(level)
    if tool and not shutil.which(tool):
        return Probe(level, False, f"{tool} is not installed")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="automodel-probe-") as tmp:
        folder = Path(tmp).resolve()
        try:
            proc = start(_probe_request(level, folder), level)
            code = proc.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            return Probe(level, False, "the test process did not finish within 60 s")
        except OSError as err:
            return Probe(level, False, f"could not start it: {err}")
        proc.kill()
        if code == 0 and (folder / "probe.txt").is_file():
            return Probe(level, True)
        said = (folder / "stderr.txt").read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return Probe(level, False, said[0][:300] if said else f"the test process exited with code {code}")


def probe(level: str) -> bool:
    """Whether `level` can start a process here (tried once per process)."""
    return probe_level(level).works


def fix_for(level: str) -> str:
    """What to do so that `level` works here, in words for the user."""
    if level == "bwrap":
        if not shutil.which("bwrap"):
            return "install bubblewrap (apt-get install bubblewrap)"
        return ("allow bubblewrap to create user namespaces: on Ubuntu 24.04 (AppArmor: 'setting up uid map: "
                "Permission denied') run `sysctl kernel.apparmor_restrict_unprivileged_userns=0` or add an AppArmor "
                "profile for /usr/bin/bwrap; elsewhere check `sysctl user.max_user_namespaces`")
    if level == "unshare":
        return "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0)"
    return "check that this Python can start a child process (free memory, process limits)"


def choose_level(level: str | None = None) -> str:
    """The isolation level to use: `level`, else $AUTOMODEL_SANDBOX, else the best that works.

    A forced level that does not work is an error, never a silent fallback;
    when no level works at all, the error names each cause and its fix."""
    forced = level or os.environ.get(ENV_FORCE) or None
    if forced:
        if forced not in LEVELS:
            raise SandboxError(f"{ENV_FORCE}={forced!r} is not a sandbox level; use one of {', '.join(LEVELS)}.")
        result = probe_level(forced)
        if not result.works:
            raise SandboxError(f"The sandbox level {forced!r} was requested but does not work on this machine: "
                               f"{result.reason}. To fix it, {fix_for(forced)}; or unset {ENV_FORCE} (and drop --sandbox) "
                               "to use the best level available.")
        return forced
    tried = []
    for candidate in LEVELS:
        result = probe_level(candidate)
        if result.works:
            return candidate
        tried.append(result)
    raise SandboxError("No sandbox level can start a child process on this machine, so nothing can be trained safely: "
                       + "; ".join(f"{r.level}: {r.reason}" for r in tried)
                       + ". To fix it, " + fix_for("bwrap") + ".")


def warn_if_weak(level: str) -> None:
    """Loud stderr warning, once per process and level, when protections are missing."""
    missing = MISSING[level]
    if missing and level not in _warned:
        _warned.add(level)
        bwrap = probe_level("bwrap")
        why = "not installed" if not shutil.which("bwrap") else f"installed but refused here ({bwrap.reason})"
        print(f"automodel: WARNING: generated code runs WITHOUT {' and WITHOUT '.join(missing)} "
              f"(sandbox level '{level}'; bubblewrap is {why}). "
              "It could read the held-out labels or files of this user"
              + (" and reach the network" if "network isolation" in missing else "")
              + ". Bubblewrap protects your files and the held-out labels from generated code: "
              "install it with `apt-get install bubblewrap`.", file=sys.stderr)


_warned: set[str] = set()


def layout(level: str, iter_dir: Path, data_dir: Path, cache_dir: Path | None) -> Layout:
    if level == "bwrap":
        return Layout(level, INSIDE_ITER, INSIDE_DATA, INSIDE_CACHE if cache_dir else None)
    # The child runs with its own working directory: every path it is given is absolute.
    return Layout(level, Path(iter_dir).resolve(), Path(data_dir).resolve(), Path(cache_dir).resolve() if cache_dir else None)


def _contains(outer: Path, inner: Path) -> bool:
    try:
        inner.resolve().relative_to(outer.resolve())
        return True
    except ValueError:
        return False


def _is_package_dir(path: Path) -> bool:
    return path.name in ("site-packages", "dist-packages")


def python_mounts(hidden: tuple[Path, ...]) -> list[Mount]:
    """Read-only mounts that let the child run this Python with its packages.

    The interpreter's prefixes and the site-packages/dist-packages directories
    on sys.path; nothing else from sys.path (which may hold the current
    directory or a home folder). An entry that would expose a hidden path
    (the dataset, the run directory) is left out.
    """
    prefixes = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), Path(sys.base_exec_prefix)]
    # The executable may be a symlink chain out of the venv (pyenv, conda).
    prefixes.append(Path(os.path.realpath(sys.executable)).parent.parent)
    wanted = list(prefixes)
    for entry in sys.path:
        path = Path(entry) if entry and os.path.isabs(entry) else None
        if path is not None and (_is_package_dir(path) or any(_contains(p, path) for p in prefixes)):
            wanted.append(path)
    try:
        wanted += [Path(p) for p in site.getsitepackages()]
    except AttributeError:
        pass
    chosen: list[Path] = []
    for path in wanted:
        if not path.exists():
            continue
        real = path.resolve()
        if real == Path("/") or any(_contains(real, h) for h in hidden):
            continue
        if any(_contains(c, real) for c in chosen):
            continue
        chosen = [c for c in chosen if not _contains(real, c)] + [real]
    mounts = [Mount(real, real) for real in chosen]
    # Unresolved spellings (e.g. /work/venv/bin/python -> pyenv) must exist inside too.
    for path in (Path(sys.prefix), Path(sys.executable).parent):
        if path.exists() and path.resolve() != path and not any(_contains(c, path) for c in chosen):
            mounts.append(Mount(path, path))
    return mounts


def gpu_devices() -> list[str]:
    return sorted(p for p in glob.glob("/dev/nvidia*") if os.path.exists(p))


def build_command(level: str, request: Request) -> list[str]:
    """The full command line for `request` at `level` (the argv itself comes last)."""
    argv = list(request.argv)
    if level == "bwrap":
        cmd = _bwrap_base()
        for m in request.mounts:
            cmd += ["--bind" if m.writable else "--ro-bind", str(m.host), str(m.inside)]
        for m in request.ro_files:
            cmd += ["--ro-bind", str(m.host), str(m.inside)]
        if request.gpu:
            # CUDA needs the device nodes (dev-bind keeps them usable) and reads
            # PCI/NUMA topology from /sys; /proc/driver/nvidia comes with --proc.
            for dev in gpu_devices():
                cmd += ["--dev-bind", dev, dev]
            cmd += ["--ro-bind", "/sys", "/sys"]
        cmd += ["--chdir", str(request.cwd), "--clearenv"]
        for key, value in request.env.items():
            cmd += ["--setenv", key, value]
        return cmd + ["--"] + argv
    if level == "unshare":
        return ["unshare", "-Urn", "--pid", "--fork", "--kill-child", "--mount-proc", "--"] + argv
    return argv


def _user_tasks(uid: int) -> int:
    """Processes and threads owned by `uid` now (what RLIMIT_NPROC counts)."""
    count = 0
    for pid in _all_pids():
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return count


def _limits() -> list[tuple[int, int]]:
    """(resource, value) pairs applied to the child before exec."""
    limits = [(resource.RLIMIT_CORE, 0)]  # no core dump of a multi-GB model
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    limits.append((resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT if hard == resource.RLIM_INFINITY else min(FILE_SIZE_LIMIT, hard)))
    if os.getuid() != 0:  # root is exempt from RLIMIT_NPROC anyway
        _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        cap = _user_tasks(os.getuid()) + NPROC_HEADROOM  # stops a fork bomb, not torch's threads
        limits.append((resource.RLIMIT_NPROC, cap if hard == resource.RLIM_INFINITY else min(cap, hard)))
    # Not RLIMIT_AS: it breaks CUDA and `import torch` alone needs ~1 GB of it.
    return limits


def _preexec(limits: list[tuple[int, int]]):
    def apply() -> None:  # runs in the forked child before exec: no allocation-heavy work here
        for res, value in limits:
            resource.setrlimit(res, (value, value))

    return apply


# ---------------------------------------------------------------- process tree

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


def _all_pids() -> list[int]:
    try:
        return [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return []


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


class ProcessTree:
    """Every process descended from one root, remembered by (pid, start time) so
    that processes that re-parented themselves (setsid, double fork) after being
    seen once are still killed, and a recycled pid is never hit."""

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
        for pid in _all_pids():
            st = _stat(pid)
            if st:
                table[pid] = st
        children: dict[int, list[int]] = {}
        for pid, (ppid, _pgid, _start) in table.items():
            children.setdefault(ppid, []).append(pid)
        # Seen processes count as roots too: an orphan re-parented to init is
        # still ours if its start time matches.
        # (A recycled pid has another start time and is never a root.)
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

    def memory_bytes(self) -> int:
        return sum(_memory_bytes(pid) for pid in self.scan())

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


class Sandboxed:
    """A started sandboxed process: poll it, measure it, kill all of it."""

    def __init__(self, level: str, request: Request, popen: subprocess.Popen, started: float):
        self.level = level
        self.request = request
        self.popen = popen
        self.started = started           # time.time() just before the start
        self.tree = ProcessTree(popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def memory_bytes(self) -> int:
        return self.tree.memory_bytes()

    def kill(self) -> None:
        self.tree.kill()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def missing(self) -> tuple[str, ...]:
        return MISSING[self.level]


def start(request: Request, level: str) -> Sandboxed:
    """Start `request` at isolation `level`, output to files, in its own session."""
    cmd = build_command(level, request)
    env = dict(request.env)
    if request.marker:
        env["AUTOMODEL_SANDBOX_ID"] = request.marker
        cmd = _with_marker(cmd, level, request.marker)
    cwd = request.cwd if level != "bwrap" else "/"
    limits = _limits()
    with open(request.stdout, "ab") as out, open(request.stderr, "ab") as err:
        started = time.time()
        popen = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd,
            env=env if level != "bwrap" else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            start_new_session=True, preexec_fn=_preexec(limits), close_fds=True,
        )
    return Sandboxed(level, request, popen, started)


def _with_marker(cmd: list[str], level: str, marker: str) -> list[str]:
    if level != "bwrap":
        return cmd
    i = cmd.index("--clearenv") + 1
    return cmd[:i] + ["--setenv", "AUTOMODEL_SANDBOX_ID", marker] + cmd[i:]


def base_env(threads: int, home: str = "/tmp", tmp: str = "/tmp") -> dict[str, str]:
    """A minimal environment: nothing of the parent's (API keys, dataset paths) leaks in."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": tmp,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        # Idle OpenMP threads sleep instead of spinning: with other processes on the
        # cores, spinning made 2 threads ~8x slower per step than 1 (measured here).
        "OMP_WAIT_POLICY": "PASSIVE",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "MPLBACKEND": "Agg",
    }
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if not user_site or user_site not in sys.path:
        env["PYTHONNOUSERSITE"] = "1"  # packages come from this interpreter's sys.path only
    for key in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env
