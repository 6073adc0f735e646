"""The CPU benchmark suite: does the loop beat a naive first-try script on a small CPU?

    python benchmarks/cpu_suite.py                  # defaults below: under an hour on 2 cores
    python benchmarks/cpu_suite.py --quick          # tiny settings (tests, smoke checks)
    python benchmarks/cpu_suite.py --datasets mnist --seeds 0 --iters 3 --time-per-iter 30

For each dataset (the shared real sets, via `automodel datasets fetch`) and
each seed it runs
  1. the naive baseline: benchmarks/naive_pipeline (2 conv layers, Adam, no
     augmentation, as a zero-shot script typically is) once, with
     `automodel run DATA --pipeline benchmarks/naive_pipeline --json --time-limit S --seed K`;
  2. `automodel fit DATA --agent expert --iters N --time-per-iter S --seed K`,
and reports test accuracy (percent, mean ± std over seeds) of the naive
baseline, of the first iteration and of the final model, and the time per
iteration split into training and fixed overhead (sandbox start, imports,
preflight, prediction, ... from each iteration's metrics.json timings; the
rest of an iteration's wall time is the loop's own work). Results go to
benchmarks/results/cpu_suite.md (+ .json) with the machine's details and the
commit. Rerunning resumes: finished runs under --work are read back.

Default settings and why they fit in an hour on 2 cores
-------------------------------------------------------
  datasets          fashion-mnist, mnist, cifar10-subset, hymenoptera
  images per class  300, 300, 500, all (~123)   (per split; --per-class N overrides)
  seeds             0, 1, 2
  iterations        5 at 20 s of training each (--iters, --time-per-iter)
  naive baseline    20 s of training (--naive-time)

Measured on this 2-core machine while other work shared it (load average
4-7), one seed of each of cifar10-subset and hymenoptera with these settings:
an iteration's fixed cost (everything but train()) was 10-16 s: preflight
on a tiny subset 5.7 s, prediction of the validation and test images 2-7.5 s
(5,000 test images for cifar10-subset), imports ~2 s, sandbox start 0.1 s.
Each command also pays its own start-up, and the first one on a dataset
decodes it (cached afterwards). Per dataset and seed that gave
  cifar10-subset  fetch 5 s + naive run 43 s + fit 188 s + show 0.3 s  = 236 s
  hymenoptera     fetch 1 s + naive run 19 s + fit 160 s + show 0.4 s  = 180 s
and the estimate the script prints (ITER_OVERHEAD_S = 13 s, COMMAND_START_S = 5 s):
  fit     5 x (20 s training + 13 s overhead) + 1.5 x 5 s  = 172.5 s
  naive   20 s + 13 s + 5 s                                 =  38   s
  show    5 s                                               =   5   s
  4 datasets x (3 seeds x 215.5 s + 5 s fetch) = 2,606 s ~ 43 minutes
(the measured mean, 208 s per dataset and seed, gives 42 minutes), leaving
about 30% headroom under the hour for a busier machine or for crashed
iterations that are repaired (a repair re-runs the preflight, not the full
budget, when the code fails early).
The script prints its own estimate before starting and the measured wall time
at the end (also in the results file).

On a GPU machine: --device cuda and a larger --time-per-iter / --per-class 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

try:
    from .common import (
        REPO,
        RESULTS_DIR,
        RUNS_DIR,
        TrialRun,
        duration,
        ensure_run,
        iteration_timings,
        machine_details,
        machine_markdown,
        markdown_table,
        mean_std,
        paper_cell,
        pct_cell,
        run_cli,
        write_json,
        write_text,
    )
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from common import (
        REPO,
        RESULTS_DIR,
        RUNS_DIR,
        TrialRun,
        duration,
        ensure_run,
        iteration_timings,
        machine_details,
        machine_markdown,
        markdown_table,
        mean_std,
        paper_cell,
        pct_cell,
        run_cli,
        write_json,
        write_text,
    )

NAIVE_PIPELINE = REPO / "benchmarks" / "naive_pipeline"
DATASETS = ("fashion-mnist", "mnist", "cifar10-subset", "hymenoptera")
# Images per class per split: enough for stable accuracies, small enough for the hour (see the docstring).
PER_CLASS = {"fashion-mnist": 300, "mnist": 300, "cifar10-subset": 500, "hymenoptera": None}
# Seconds measured here (docstring) that the up-front estimate uses.
ITER_OVERHEAD_S = 13.0
COMMAND_START_S = 5.0


@dataclass(frozen=True)
class Settings:
    datasets: tuple[str, ...] = DATASETS
    seeds: tuple[int, ...] = (0, 1, 2)
    iters: int = 5                    # fit iterations per seed
    time_per_iter: float = 20.0       # training seconds per fit iteration
    naive_time: float = 20.0          # training seconds of the naive baseline
    per_class: int | None = -1        # -1: the per-dataset defaults above; None/0: all images; N: N per class per split
    device: str = "cpu"
    work: Path = RUNS_DIR / "cpu_suite"

    def per_class_for(self, name: str) -> int | None:
        if self.per_class == -1:
            return PER_CLASS.get(name)
        return self.per_class or None

    def estimate_seconds(self) -> float:
        fit = self.iters * (self.time_per_iter + ITER_OVERHEAD_S) + 1.5 * COMMAND_START_S
        naive = self.naive_time + ITER_OVERHEAD_S + COMMAND_START_S
        show = COMMAND_START_S
        return len(self.datasets) * (len(self.seeds) * (fit + naive + show) + 5.0)


QUICK = Settings(datasets=("mnist",), seeds=(0,), iters=2, time_per_iter=5.0, naive_time=5.0, per_class=10)


@dataclass
class Naive:
    test_accuracy: float | None
    timings: dict[str, float]
    error: str | None


@dataclass
class DatasetRun:
    name: str
    path: Path | None
    error: str | None = None
    naive: list[Naive] = field(default_factory=list)
    fits: list[TrialRun] = field(default_factory=list)


def fetch_dataset(name: str, st: Settings, log: Path) -> DatasetRun:
    pc = st.per_class_for(name)
    folder = st.work / "data" / (name + (f"-pc{pc}" if pc else ""))
    if folder.is_dir() and any(folder.iterdir()):
        return DatasetRun(name, folder)
    args: list[Any] = ["datasets", "fetch", name, folder] + (["--per-class", pc] if pc else [])
    res = run_cli(args, log=log)
    return DatasetRun(name, folder) if res.ok else DatasetRun(name, None, error=res.error_tail(3))


def run_naive(ds: DatasetRun, seed: int, st: Settings, log: Path) -> Naive:
    """The naive pipeline once; its metrics.json is read back on a rerun."""
    out = st.work / ds.name / f"naive_seed{seed}"
    metrics = out / "iter" / "metrics.json"
    if not metrics.exists():
        res = run_cli(["run", ds.path, "--pipeline", NAIVE_PIPELINE, "--json", "--time-limit", f"{st.naive_time:g}",
                       "--seed", seed, "--device", st.device, "--out", out], log=log)
        if not metrics.exists():
            return Naive(None, {}, f"automodel run failed: {res.error_tail(3)}")
    import json

    data = json.loads(metrics.read_text(encoding="utf-8"))
    message = (data.get("error") or {}).get("message", "")
    error = None if data.get("status") == "ok" else f"naive pipeline {data.get('status')}: {message}"
    return Naive(data.get("test_accuracy"), {k: float(v) for k, v in (data.get("timings") or {}).items()}, error)


def run_fit(ds: DatasetRun, seed: int, st: Settings, log: Path) -> TrialRun:
    # Greedy: the suite counts N equal iterations per seed (benchmarks/p1_budget.py measures the budget search).
    args = ["--agent", "expert", "--time-per-iter", f"{st.time_per_iter:g}", "--seed", str(seed), "--device", st.device,
            "--search", "greedy"]
    return ensure_run(ds.path, st.work / ds.name, f"seed{seed}", st.iters, args, log=log)


# ------------------------------------------------------------------- report


def time_split(fits: Sequence[TrialRun]) -> dict[str, float | None]:
    """Mean seconds per iteration: wall (loop's record), training and the rest of the sandboxed run."""
    walls = [r.get("seconds") for t in fits for r in t.iterations]
    timings = [tm for t in fits for tm in iteration_timings(t.run_dir)]
    train = [tm.get("training") for tm in timings]
    overhead = [tm["total"] - tm.get("training", 0.0) for tm in timings]
    parts = {}
    for key in ("sandbox_start", "imports", "contract", "preflight", "prediction"):
        parts[key] = mean_std(tm.get(key) for tm in timings)[0]
    return {"wall": mean_std(walls)[0], "training": mean_std(train)[0], "overhead": mean_std(overhead)[0], **parts}


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} s"


def build_report(runs: Sequence[DatasetRun], st: Settings, machine: dict[str, Any], wall: float) -> str:
    n = len(st.seeds)
    rows, detail = [], []
    for ds in runs:
        if ds.error:
            rows.append([ds.name, "unavailable: " + ds.error, "", "", "", "", "", ""])
            continue
        split = time_split(ds.fits)
        rows.append(
            [
                ds.name + (f" ({st.per_class_for(ds.name)}/class)" if st.per_class_for(ds.name) else " (all)"),
                pct_cell([x.test_accuracy for x in ds.naive], n),
                pct_cell([t.first_test() for t in ds.fits], n),
                pct_cell([t.final_test() if t.error is None else None for t in ds.fits], n),
                _s(split["wall"]),
                _s(split["training"]),
                _s(split["overhead"]),
                duration(sum(t.seconds() for t in ds.fits)),
            ]
        )
        detail.append(
            [
                ds.name,
                _s(split["sandbox_start"]),
                _s(split["imports"]),
                _s(split["contract"]),
                _s(split["preflight"]),
                _s(split["prediction"]),
            ]
        )
    issues = [f"{ds.name}: {ds.error}" for ds in runs if ds.error]
    for ds in runs:
        issues += [f"{ds.name} naive seed {s}: {x.error}" for s, x in zip(st.seeds, ds.naive) if x.error]
        issues += [f"{ds.name} fit seed {s}: {t.error}" for s, t in zip(st.seeds, ds.fits) if t.error]
    lines = [
        "# CPU suite",
        "",
        f"{len(st.datasets)} datasets x {n} seed(s) ({', '.join(map(str, st.seeds))}); fit: built-in expert, "
        f"{st.iters} iterations of "
        f"{st.time_per_iter:g} s training; naive baseline: {st.naive_time:g} s training; device {st.device}. "
        f"Wall time of this invocation: {duration(wall)} (estimated beforehand: {duration(st.estimate_seconds())}).",
        "",
        "Test accuracy in percent, mean ± std over seeds. First iteration: the Project Architect's pipeline; final: "
        "the iteration "
        "with the best validation accuracy. Seconds are means per iteration: wall is the loop's record of the whole "
        "iteration, "
        "training the time inside train(), overhead the rest.",
        "",
        markdown_table(
            [
                "dataset",
                "naive baseline",
                "first iteration",
                "final",
                "s/iteration",
                "training",
                "overhead",
                "fit compute",
            ],
            rows,
        ),
        "",
        "Where the overhead goes (mean seconds per iteration, from metrics.json timings):",
        "",
        markdown_table(["dataset", "sandbox start", "imports", "contract check", "preflight", "prediction"], detail),
        "",
    ]
    if issues:
        lines += ["Incomplete (rerun to resume):", ""] + [f"- {i}" for i in issues] + [""]
    lines += ["## Per seed", "", per_seed_table(runs, st), "", "## Machine", "", machine_markdown(machine), ""]
    return "\n".join(lines)


def per_seed_table(runs: Sequence[DatasetRun], st: Settings) -> str:
    rows = []
    for ds in runs:
        for seed, naive, fit in zip(st.seeds, ds.naive, ds.fits):
            failed = sum(1 for r in fit.iterations if r.get("status") != "ok")
            rows.append(
                [
                    ds.name,
                    seed,
                    paper_cell(naive.test_accuracy),
                    paper_cell(fit.first_test()),
                    paper_cell(fit.final_test()),
                    len(fit.iterations),
                    failed,
                    duration(fit.seconds()),
                ]
            )
    return markdown_table(
        ["dataset", "seed", "naive %", "first %", "final %", "iterations", "failed", "fit compute"], rows
    )


def results_json(runs: Sequence[DatasetRun], st: Settings, machine: dict[str, Any], wall: float) -> dict[str, Any]:
    return {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in st.__dict__.items()},
        "machine": machine,
        "wall_seconds": round(wall, 1),
        "estimated_seconds": round(st.estimate_seconds(), 1),
        "datasets": [
            {
                "dataset": ds.name,
                "path": str(ds.path) if ds.path else None,
                "error": ds.error,
                "naive": [x.__dict__ for x in ds.naive],
                "fits": [
                    {
                        "run_dir": str(t.run_dir),
                        "first_test": t.first_test(),
                        "final_test": t.final_test(),
                        "iterations": t.iterations,
                        "error": t.error,
                    }
                    for t in ds.fits
                ],
                "time_split": time_split(ds.fits) if not ds.error else None,
            }
            for ds in runs
        ],
    }


# --------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, Path]:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring for what runs and the time budget.",
    )
    p.add_argument("--datasets", help=f"comma-separated registry names (default {','.join(DATASETS)})")
    p.add_argument("--seeds", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--iters", type=int, help="fit iterations per seed (default 5)")
    p.add_argument("--time-per-iter", type=float, help="training seconds per fit iteration (default 20)")
    p.add_argument("--naive-time", type=float, help="training seconds of the naive baseline (default 20)")
    p.add_argument(
        "--per-class",
        type=int,
        help="images per class per split for every dataset (0 = all; default: per dataset, see --help)",
    )
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), help="where training runs (default cpu)")
    p.add_argument(
        "--quick", action="store_true", help="tiny settings: mnist, 10 images per class, 1 seed, 2 iterations of 5 s"
    )
    p.add_argument(
        "--work",
        type=Path,
        help="where datasets and runs go (default benchmarks/runs/cpu_suite; --quick: .../cpu_suite_quick)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="Markdown results (default benchmarks/results/cpu_suite.md; --quick: cpu_suite_quick.md)",
    )
    args = p.parse_args(argv)
    base = QUICK if args.quick else Settings()
    changes: dict[str, Any] = {}
    if args.datasets:
        changes["datasets"] = tuple(d.strip() for d in args.datasets.split(",") if d.strip())
    if args.seeds:
        try:
            changes["seeds"] = tuple(int(s) for s in args.seeds.split(",") if s.strip())
        except ValueError:
            p.error(f"--seeds must be comma-separated integers, not {args.seeds!r}")
    for key in ("iters", "time_per_iter", "naive_time", "per_class", "device"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    changes["work"] = (args.work or RUNS_DIR / ("cpu_suite_quick" if args.quick else "cpu_suite")).resolve()
    st = Settings(**{**base.__dict__, **changes})
    if st.iters < 1 or not st.seeds or not st.datasets:
        p.error("--iters must be at least 1 and --seeds/--datasets must not be empty")
    out = args.out or RESULTS_DIR / ("cpu_suite_quick.md" if args.quick else "cpu_suite.md")
    return st, out


def main(argv: Sequence[str] | None = None) -> int:
    st, out = parse_args(argv)
    from automodel.datasets.registry import load_registry
    from automodel.errors import AutomodelError

    try:
        reg = load_registry()
        for name in st.datasets:
            reg.get(name)  # an unknown name fails now, not after half an hour
    except AutomodelError as err:
        print(f"cpu_suite: error: {err}", file=sys.stderr)
        return err.exit_code
    print(
        f"cpu_suite: {len(st.datasets)} datasets x {len(st.seeds)} seeds, estimated {duration(st.estimate_seconds())}",
        file=sys.stderr,
    )
    t0 = time.monotonic()
    machine = machine_details()
    log = st.work / "cpu_suite.log"
    runs: list[DatasetRun] = []
    try:
        _run_all(st, runs, machine, log, out, t0)
    except KeyboardInterrupt:
        print(f"\ncpu_suite: interrupted; rerun the same command to resume (partial results: {out})", file=sys.stderr)
        return 130
    wall = time.monotonic() - t0
    write_text(out, build_report(runs, st, machine, wall))
    write_json(out.with_suffix(".json"), results_json(runs, st, machine, wall))
    print(out.read_text(encoding="utf-8").split("## Per seed")[0].rstrip())
    print(f"\nwritten: {out} ({duration(wall)})")
    incomplete = any(ds.error or any(x.error for x in ds.naive) or any(t.error for t in ds.fits) for ds in runs)
    return 1 if incomplete else 0


def _run_all(st: Settings, runs: list[DatasetRun], machine: dict[str, Any], log: Path, out: Path, t0: float) -> None:
    for name in st.datasets:
        ds = fetch_dataset(name, st, log)
        runs.append(ds)
        if ds.error:
            print(f"cpu_suite: {name}: unavailable: {ds.error}", file=sys.stderr)
            continue
        for seed in st.seeds:
            print(
                f"cpu_suite: {name} seed {seed}: naive baseline, then {st.iters} iterations",
                file=sys.stderr,
                flush=True,
            )
            ds.naive.append(run_naive(ds, seed, st, log))
            ds.fits.append(run_fit(ds, seed, st, log))
            # Written after every seed so an interrupted suite still leaves its numbers.
            write_text(out, build_report(runs, st, machine, time.monotonic() - t0))


if __name__ == "__main__":
    sys.exit(main())
