"""How an untrusted child process is isolated: the levels, their command lines and mounts.

Isolation levels, best first (probe.py picks the first that works on this
machine; `AUTOMODEL_SANDBOX=bwrap|unshare|none` or `level=` forces one):

1. ``bwrap`` (bubblewrap): new user, pid, network, ipc, uts and mount
   namespaces, all capabilities dropped (needed as root: without
   ``--cap-drop ALL`` sandboxed code can remount / read-write), no network,
   a read-only view of /usr and the Python installation only, a read-only
   root, a private size-capped /tmp and /dev/shm, the data bundle read-only,
   the child's own work folder read-write and nothing
   else: not the dataset folder, not the run directory (which holds labels),
   not the home directory.
2. ``unshare``: ``unshare -Urn --pid --fork --kill-child --mount-proc``, with a
   shell as the namespace's init: no network and its own pid namespace, but NO
   filesystem isolation (the code can read and write whatever this user can,
   the dataset's labels included).
3. ``none``: a new session/process group only: NO network and NO filesystem
   isolation.

On every level the environment is cleared to a minimal one (no API keys leak
in); supervisor.py starts the child in its slot (limits.py) and kills its
whole process tree (proctree.py). Level ``none`` can miss a process that
double-forks between two scans; levels 1-2 cannot (pid namespace). Below
level 1 a loud warning naming what is unprotected goes to stderr.

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
import site
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from automodel.errors import AutomodelError
from automodel.sandbox.limits import ram_bytes

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
INSIDE_HARNESS = Path("/sandbox/harness.py")

# The harness run inside the sandbox, and the files it imports from its own folder (mounted beside it).
CHILD_SCRIPT = Path(__file__).with_name("child.py")
CHILD_HELPERS = tuple(Path(__file__).with_name(name) for name in ("child_data.py", "child_checks.py", "child_probe.py"))

# Files of /etc that libraries read (dynamic loader for CUDA's dlopen, time zone,
# locale); the rest of /etc (passwd, ssh, ...) stays out.
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives", "nsswitch.conf", "host.conf")



def _tmpfs_bytes() -> int:
    """Size cap of the sandbox's private /tmp and /dev/shm (each): a quarter of RAM.
    What they hold also counts against the child's memory limit (proctree.py)."""
    return max(2**30, ram_bytes() // 4)


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


def layout(level: str, iter_dir: Path, data_dir: Path, cache_dir: Path | None) -> Layout:
    if level == "bwrap":
        return Layout(level, INSIDE_ITER, INSIDE_DATA, INSIDE_CACHE if cache_dir else None)
    # The child runs with its own working directory: every path it is given is absolute.
    cache = Path(cache_dir).resolve() if cache_dir else None
    return Layout(level, Path(iter_dir).resolve(), Path(data_dir).resolve(), cache)


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
        # The root is a tmpfs bwrap made: read-only, so nothing can be stored in RAM
        # outside the size-capped /tmp and /dev/shm, which the watchdog counts.
        cmd += ["--remount-ro", "/", "--chdir", str(request.cwd), "--clearenv"]
        for key, value in request.env.items():
            cmd += ["--setenv", key, value]
        return cmd + ["--"] + argv
    if level == "unshare":
        # The first process of a new pid namespace is its init, and the kernel drops any signal that
        # init has no handler for, even a SIGKILL it sends itself: generated code that kills itself would
        # run on. A shell as init keeps the child an ordinary process, as bwrap's own init does; the
        # shell exits with the child's status (128+N for signal N, which signal_name reads).
        return ["unshare", "-Urn", "--pid", "--fork", "--kill-child", "--mount-proc", "--",
                "/bin/sh", "-c", '"$@"; exit $?', "sh"] + argv
    return argv


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
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "MPLBACKEND": "Agg",
    }
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if not user_site or user_site not in sys.path:
        env["PYTHONNOUSERSITE"] = "1"  # packages come from this interpreter's sys.path only
    if threads < (os.cpu_count() or 1):
        # A slot sharing the machine: idle OpenMP threads sleep instead of spinning, since
        # spinning beside other busy processes made 2 threads ~8x slower per step than 1.
        # A child that has every core keeps the default (spin briefly, then sleep): with
        # PASSIVE, a small CNN on 2 cores used 77% of them and ran 20% slower (measured here).
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    for key in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env
