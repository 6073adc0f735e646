"""What each hostile module of tests/hostile/ costs the host when it runs through the real runner.

The tests check that each case is stopped for the right reason; this script
records what the host went through meanwhile, for the table issue 18 asks for:
for every case, the outcome (status, error type, the first words of the
message), the peaks the runner measured (memory of the child's processes plus
its RAM-backed files, processes, disk in its work folder, log bytes cut) and
what a sampler outside the runner saw on the host (processes alive at once,
growth of shared memory, the lowest MemAvailable), and the time the parent
needed to record the iteration.

    python benchmarks/hostile_suite.py [--level bwrap] [--only fork_bomb tmpfs_hog]

The data is Fashion-MNIST (20 per class) materialised from ../shared, as in the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # tests/hostile/kit.py builds the iteration folders

from hostile.kit import HostSampler, fashion_bundle, fast_config, make_iter, meminfo_kb, process_count  # noqa: E402,E501

from automodel.sandbox.iteration import run_iteration  # noqa: E402
from benchmarks.common import (  # noqa: E402
    machine_details,
    machine_markdown,
    markdown_table,
    materialize_shared,
    write_text,
)

RESULTS = REPO / "benchmarks" / "results"


@dataclass(frozen=True)
class Case:
    """One hostile module and the limits it runs under (the same as its test's)."""

    name: str
    train_file: str
    hostile: dict | None = None
    config: dict = field(default_factory=dict)
    bwrap_only: bool = False     # attacks what only bubblewrap's private /tmp and /dev/shm hold


CASES = (
    Case("trusted_names", "train_trusted_names.py"),
    Case("deep_tree", "train_deep_tree.py", {"depth": 1500}),
    Case("forged_event", "train_forged_event.py", {"seconds": 100},
         {"time_limit": 4.0, "interrupt_grace": 1.0, "kill_grace": 2.0}),
    Case("tmpfs_hog", "train_tmpfs_hog.py", {"gb": 2}, {"memory_limit": 1536 * 2**20, "time_limit": 30.0},
         bwrap_only=True),
    Case("memory_hog", "train_memory_hog.py", None, {"memory_limit": 1536 * 2**20, "time_limit": 60.0}),
    Case("log_flood", "train_log_flood.py", {"mb": 200}, {"log_limit": 2 * 2**20, "time_limit": 3.0}),
    Case("fork_bomb", "train_fork_bomb.py", {"n": 10_000}, {"max_processes": 200, "time_limit": 30.0}),
    Case("self_kill", "train_self_kill.py"),
    Case("no_stop", "train_no_stop.py", None, {"preflight_limit": 10.0, "time_limit": 300.0}),
)


def run_case(case: Case, bundle, level: str, folder: Path) -> dict:
    it = make_iter(folder / case.name, {"train": case.train_file}, hostile=case.hostile)
    config = fast_config(sandbox=level, **case.config)
    available_before = meminfo_kb("MemAvailable")
    started = time.monotonic()
    with HostSampler() as host:
        result = run_iteration(it, bundle, config)
    seconds = time.monotonic() - started
    time.sleep(0.5)
    error = result.error
    return {
        "case": case.name,
        "status": result.status,
        "error": error.type if error else "",
        "message": (error.message.splitlines()[0][:90] if error and error.message else ""),
        "recorded": (it / "metrics.json").is_file(),
        "seconds": round(seconds, 1),
        "peak_memory_mb": result.peak_memory_mb,
        "peak_processes": result.peak_processes,
        "disk_mb": result.disk_mb,
        "logs_cut_mb": round(sum(result.logs_truncated.values()) / 2**20, 1),
        "host_extra_processes": host.peak_processes - host.base_processes,
        "host_shmem_growth_mb": round((host.peak_shmem - host.base_shmem) / 1024, 1),
        "host_available_drop_mb": round((available_before - host.low_available) / 1024, 1),
        "host_processes_left": process_count(live_only=True) - host.live_base,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--level", default="bwrap", choices=("bwrap", "unshare", "none"),
                        help="sandbox level (default bwrap, as CI)")
    parser.add_argument("--only", nargs="*", help="case names to run (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS / "hostile_suite.md")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.only or c.name in args.only]
    rows = []
    with tempfile.TemporaryDirectory(prefix="hostile-suite-") as tmp:
        tmp = Path(tmp)
        data = materialize_shared("fashion-mnist", tmp / "fm", "--split", "all", "--per-class", "20")
        ds, bundle = fashion_bundle(lambda *a: data, tmp / "bundle")
        for case in cases:
            if case.bwrap_only and args.level != "bwrap":
                continue
            row = run_case(case, bundle, args.level, tmp / "iters")
            print(json.dumps(row), flush=True)
            rows.append(row)
    columns = ["case", "status", "error", "recorded", "seconds", "peak_memory_mb", "peak_processes", "disk_mb",
               "logs_cut_mb", "host_extra_processes", "host_shmem_growth_mb", "host_available_drop_mb",
               "host_processes_left", "message"]
    text = "\n\n".join([
        f"# Hostile modules through the runner (sandbox level {args.level})",
        "Each row: one module of tests/hostile/ replacing train.py of the reference pipeline, on "
        "Fashion-MNIST 20/class, under its test's limits. peak_* and disk are the runner's own measures; "
        "host_* were sampled every 50 ms outside it (processes alive beyond those before the case, Shmem "
        "growth, the largest drop of MemAvailable, live processes left 0.5 s after, zombies not counted).",
        markdown_table(columns, [[row[c] for c in columns] for row in rows]),
        machine_markdown(machine_details()),
    ]) + "\n"
    write_text(args.out, text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
