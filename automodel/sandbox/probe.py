"""Which isolation level works here: a tiny real child at each level, best first.

    level = choose_level()          # before the first iteration of a run
    warn_if_weak(level)             # says loudly what a weaker level leaves unprotected

bubblewrap can be installed and still refused (Ubuntu 24.04's AppArmor answers
"bwrap: setting up uid map: Permission denied"), so `--help` is not enough:
each level starts Python as an iteration's child would and has it write one
file into a writable folder. A forced level (AUTOMODEL_SANDBOX) that fails is
an error, never a silent fallback; when no level works the error names each
cause and the fix.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from automodel.sandbox.levels import (
    ENV_FORCE,
    INSIDE_ITER,
    LEVELS,
    MISSING,
    Mount,
    Request,
    SandboxError,
    base_env,
    python_mounts,
)
from automodel.sandbox.limits import Slot
from automodel.sandbox.supervisor import run_child

PROBE_SCRIPT = "import sys; open(sys.argv[1], 'w').write('ok')"
PROBE_SECONDS = 60


@dataclass(frozen=True)
class Probe:
    level: str
    works: bool
    reason: str = ""     # why not, in the words of the tool that refused (first line of its stderr)


def _probe_request(level: str, folder: Path) -> Request:
    inside = INSIDE_ITER if level == "bwrap" else folder
    mounts = (*python_mounts(()), Mount(folder, INSIDE_ITER, writable=True)) if level == "bwrap" else ()
    return Request(argv=(sys.executable, "-I", "-c", PROBE_SCRIPT, str(inside / "probe.txt")), cwd=inside,
                   stdout=folder / "stdout.txt", stderr=folder / "stderr.txt", mounts=mounts,
                   env=base_env(1, home=str(inside), tmp=str(inside)))


@functools.cache
def probe_level(level: str) -> Probe:
    """Try `level` once per process with a tiny real child."""
    if level not in LEVELS:
        raise ValueError(level)
    tool = {"bwrap": "bwrap", "unshare": "unshare"}.get(level)
    if tool and not shutil.which(tool):
        return Probe(level, False, f"{tool} is not installed")
    with tempfile.TemporaryDirectory(prefix="automodel-probe-") as tmp:
        folder = Path(tmp).resolve()
        try:
            outcome = run_child(_probe_request(level, folder), level, Slot(threads=1),
                                deadline=lambda now, launched: ("probe", launched + PROBE_SECONDS))
        except OSError as err:
            return Probe(level, False, f"could not start it: {err}")
        if outcome.reason == "exited" and outcome.exit_code == 0 and (folder / "probe.txt").is_file():
            return Probe(level, True)
        if outcome.reason != "exited":
            return Probe(level, False, f"the test process was stopped ({outcome.reason}) {outcome.message}".strip())
        said = (folder / "stderr.txt").read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return Probe(level, False, said[0][:300] if said else f"the test process exited with code {outcome.exit_code}")


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
        return ("allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
                "user.max_user_namespaces > 0)")
    return "check that this Python can start a child process (free memory, process limits)"


def choose_level(level: str | None = None) -> str:
    """The isolation level to use: `level`, else $AUTOMODEL_SANDBOX, else the best that works."""
    forced = level or os.environ.get(ENV_FORCE) or None
    if forced:
        if forced not in LEVELS:
            raise SandboxError(f"{ENV_FORCE}={forced!r} is not a sandbox level; use one of {', '.join(LEVELS)}.")
        result = probe_level(forced)
        if not result.works:
            raise SandboxError(
                f"The sandbox level {forced!r} was requested but does not work on this machine: "
                f"{result.reason}. To fix it, {fix_for(forced)}; or unset {ENV_FORCE} (and drop --sandbox) "
                "to use the best level available."
            )
        return forced
    tried = []
    for candidate in LEVELS:
        result = probe_level(candidate)
        if result.works:
            return candidate
        tried.append(result)
    raise SandboxError(
        "No sandbox level can start a child process on this machine, so nothing can be trained safely: "
        + "; ".join(f"{r.level}: {r.reason}" for r in tried)
        + ". To fix it, "
        + fix_for("bwrap")
        + "."
    )


_warned: set[str] = set()


def warn_if_weak(level: str) -> None:
    """Loud stderr warning, once per process and level, when protections are missing."""
    missing = MISSING[level]
    if missing and level not in _warned:
        _warned.add(level)
        why = (
            "not installed"
            if not shutil.which("bwrap")
            else f"installed but refused here ({probe_level('bwrap').reason})"
        )
        print(
            f"automodel: WARNING: generated code runs WITHOUT {' and WITHOUT '.join(missing)} "
            f"(sandbox level '{level}'; bubblewrap is {why}). "
            "It could read the held-out labels or files of this user"
            + (" and reach the network" if "network isolation" in missing else "")
            + ". Bubblewrap protects your files and the held-out labels from generated code: "
            "install it with `apt-get install bubblewrap`.",
            file=sys.stderr,
        )
