"""Benchmark: the fixed cost of one iteration, with bubblewrap and without.

    python benchmarks/iteration_overhead.py              # 5 repetitions per level
    python benchmarks/iteration_overhead.py --reps 9 --per-class 50

Runs the reference pipeline (pipelines/reference) through runner.run_iteration
on a small real Fashion-MNIST folder with a tiny training budget, alternating
sandbox levels (bwrap, none) so both see the same machine load, and reports
the median of each fixed-cost phase (sandbox start, imports, data ready,
contract check, preflight, first batch) per level and their ratio
(bwrap / none). A bare start (`python -c pass` in each level) isolates what
the sandbox itself adds. Results go to stdout and to
benchmarks/results/iteration_overhead.md (overwritten), with machine details.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from common import machine_details, machine_markdown, markdown_table, write_text  # noqa: E402

from automodel.intake import load_dataset  # noqa: E402
from automodel.sandbox import levels, probe  # noqa: E402
from automodel.sandbox.bundle import prepare_data  # noqa: E402
from automodel.sandbox.iteration import RunConfig, run_iteration  # noqa: E402
from automodel.sandbox.limits import Slot  # noqa: E402
from automodel.sandbox.supervisor import run_child  # noqa: E402

MATERIALIZE = REPO.parent / "shared" / "tools" / "materialize.py"
RESULTS = REPO / "benchmarks" / "results" / "iteration_overhead.md"
REFERENCE = REPO / "pipelines" / "reference"
PHASES = ("sandbox_start", "imports", "data_ready", "contract", "preflight", "first_batch")
LEVELS = ("bwrap", "none")


def bare_start(level: str, reps: int, tmp: Path) -> float:
    """Median seconds to start and finish `python -c pass` at `level` (no torch)."""
    times = []
    mounts = tuple(levels.python_mounts(())) if level == "bwrap" else ()
    for _ in range(reps):
        req = levels.Request(argv=(sys.executable, "-I", "-c", "pass"), cwd=Path("/tmp") if level == "bwrap" else tmp,
                             stdout=tmp / "bare.out", stderr=tmp / "bare.err", mounts=mounts, env=levels.base_env(1))
        t0 = time.perf_counter()
        run_child(req, level, Slot(threads=1), deadline=lambda now, launched: ("run", launched + 60))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions per sandbox level (default 5)")
    parser.add_argument(
        "--per-class", type=int, default=20, help="Fashion-MNIST images per class and split (default 20)"
    )
    parser.add_argument("--time-limit", type=float, default=1.0, help="training seconds per iteration (default 1)")
    args = parser.parse_args()

    levels_here = [lv for lv in LEVELS if probe.probe(lv)]
    if "bwrap" not in levels_here:
        print("warning: bubblewrap does not work here; only the unsandboxed level is measured", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="automodel-overhead-") as tmpdir:
        tmp = Path(tmpdir)
        data = tmp / "fashion"
        subprocess.run(
            [
                sys.executable,
                str(MATERIALIZE),
                "--dataset",
                "fashion-mnist",
                "--layout",
                "imagefolder",
                "--per-class",
                str(args.per_class),
                "--out",
                str(data),
            ],
            check=True,
            capture_output=True,
        )
        ds = load_dataset(data)
        split = ds.split(seed=0)
        bundle = prepare_data(ds, split, ds.decode(cache_dir=tmp / "cache"), tmp / "run" / "data")
        bare = {lv: bare_start(lv, max(5, args.reps), tmp) for lv in levels_here}

        samples: dict[str, list[dict[str, float]]] = {lv: [] for lv in levels_here}
        for rep in range(args.reps):
            for lv in levels_here:  # interleaved: both levels see the same background load
                it = tmp / "run" / f"{lv}_{rep}"
                it.mkdir()
                for module in ("data", "model", "train"):
                    shutil.copyfile(REFERENCE / f"{module}.py", it / f"{module}.py")
                result = run_iteration(it, bundle, RunConfig(time_limit=args.time_limit, sandbox=lv, threads=0))
                if not result.ok:
                    print(
                        f"{lv} repetition {rep}: {result.status}: {result.error.text() if result.error else ''}",
                        file=sys.stderr,
                    )
                    return 1
                t = dict(result.timings)
                t["fixed"] = sum(t.get(p, 0.0) for p in PHASES)
                samples[lv].append(t)
                print(f"  {lv:<6} rep {rep + 1}: fixed {t['fixed']:.2f} s, total {t['total']:.2f} s", file=sys.stderr)

    med = {
        lv: {
            k: statistics.median(s[k] for s in samples[lv])
            for k in (*PHASES, "fixed", "training", "prediction", "total")
        }
        for lv in levels_here
    }
    rows = []
    for key in ("bare start (python -c pass)", *PHASES, "fixed", "training", "prediction", "total"):
        if key.startswith("bare"):
            values = [bare[lv] for lv in levels_here]
        else:
            values = [med[lv][key] for lv in levels_here]
        ratio = f"{values[0] / values[1]:.2f}" if len(values) == 2 and values[1] > 0 else "-"
        rows.append([key.replace("_", " ")] + [f"{v:.3f}" for v in values] + [ratio])
    header = ["phase (median s)"] + list(levels_here) + (["ratio bwrap/none"] if len(levels_here) == 2 else [""])
    table = markdown_table(header, rows)
    details = machine_details()
    fixed_share = {lv: med[lv]["fixed"] / med[lv]["total"] for lv in levels_here}
    text = "\n".join(
        [
            "# Iteration overhead: fixed cost of one iteration, with and without bubblewrap",
            "",
            f"Reference pipeline, Fashion-MNIST {args.per_class}/class ({bundle.counts['train']} train, "
            f"{bundle.counts['val']} val, "
            f"{bundle.counts['test']} test images), {args.time_limit:g} s training budget, {args.reps} repetitions "
            "per level "
            "(interleaved), median per phase. `fixed` = sandbox start + imports + data ready + contract + preflight "
            "+ first batch.",
            "",
            table,
            "",
            "Fixed share of the iteration: "
            + ", ".join(f"{lv} {100 * fixed_share[lv]:.0f}%" for lv in levels_here)
            + f" (at a {args.time_limit:g} s budget; at 60 s it is about "
            + ", ".join(
                f"{lv} {100 * med[lv]['fixed'] / (med[lv]['fixed'] + 60 + med[lv]['prediction']):.0f}%"
                for lv in levels_here
            )
            + ").",
            "",
            machine_markdown(details),
            "",
            f"Command: `python benchmarks/iteration_overhead.py --reps {args.reps} --per-class {args.per_class} "
            f"--time-limit {args.time_limit:g}`",
            "",
        ]
    )
    print(text)
    write_text(RESULTS, text)
    print(f"wrote {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
