"""`fit --parallel K`: candidates per hour and accuracy at equal wall time, K=1 against K=2, side by side.

For each dataset and pair, one after the other on the same machine (A B, A B, ...):

    automodel fit DATA --time-budget B --parallel 1 --agent expert
    automodel fit DATA --time-budget B --parallel 2 --agent expert

Recorded for each run: exploration runs made before the final refit (candidates and the first pipeline)
and their rate per hour of fit's wall time, the mean images/s and CPU use of those runs (each run in a
K=2 slot has half the cores), the final model's test accuracy, and the machine's steal over the run.
Ratios are given pair by pair (K=2 / K=1).

    python benchmarks/parallel.py --datasets fashion-mnist cifar10 --budget 300 --pairs 1 [--ray]

With --ray, K=2 also runs with --executor ray on a local Ray instance right after each pair, and the
report gives what Ray adds per run against the local pool.

Writes benchmarks/results/parallel.{md,json}; a pair is added to the .json as it finishes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import (  # noqa: E402
    compare_and_report,
    machine_markdown,
    markdown_table,
    read_show,
    write_json,
)
from benchmarks.first_pipeline import DATASETS, RESULTS, materialize  # noqa: E402
from benchmarks.p1_budget import run_fit  # noqa: E402


def _mean(values: list) -> float | None:
    values = [v for v in values if isinstance(v, (int, float))]
    return sum(values) / len(values) if values else None


def measure(data: Path, work: Path, budget: float, seed: int, parallel: int, executor: str = "local") -> dict:
    fit = run_fit(data, work, budget, seed, "budget", ("--parallel", str(parallel), "--executor", executor))
    if "error" in fit:
        return fit
    run = Path(fit["run"])
    show, _ = read_show(run)
    explore = [r for r in (show or {}).get("iterations", []) if r.get("kind") in ("candidate", "promotion")]
    computes = [r.get("compute") or {} for r in explore]
    # What a run costs beyond its training: sandbox start, preflight, prediction, and for Ray the task's
    # scheduling and the files' trip (its wall seconds in the record less its training seconds).
    overheads = []
    for r in explore:
        training = json.loads((run / f"iter_{r['iteration']:03d}" / "metrics.json").read_text()).get(
            "timings", {}).get("training")
        if isinstance(training, (int, float)):
            overheads.append(r["seconds"] - training)
    return {
        "executor": executor,
        "overhead_s": _mean(overheads),
        **{k: fit.get(k) for k in ("test_accuracy", "final_kind", "final_members", "final_training_s", "wall_s",
                                   "run_steal_share", "run")},
        "parallel": parallel,
        "exploration_runs": len(explore),
        "runs_per_hour": round(len(explore) / fit["wall_s"] * 3600, 1),
        "run_images_per_s": _mean([c.get("images_per_second") for c in computes]),
        "run_epochs": _mean([c.get("epochs") for c in computes]),
        "run_cpu_utilisation": _mean([c.get("cpu_utilisation") for c in computes]),
        "best_candidate_val": (show.get("best") or {}).get("val_accuracy"),
    }


def compare(args, out_json: Path, details: dict) -> dict:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    result = {"budget": args.budget, "rows": []}
    for pair in range(args.pairs):
        for name in args.datasets:
            data = materialize(name, work / "data")
            one = measure(data, work, args.budget, pair, 1)
            two = measure(data, work, args.budget, pair, 2)
            row = {"dataset": name, "pair": pair, "k1": one, "k2": two}
            if args.ray:
                row["k2_ray"] = measure(data, work, args.budget, pair, 2, "ray")
            result["rows"].append(row)
            print(json.dumps(result["rows"][-1]), flush=True)
            write_json(out_json, {"machine": details, **result})
    return result


def report(result: dict, details: dict) -> str:
    def cell(v, fmt="{:.4f}"):
        return "-" if v is None else fmt.format(v)

    def ratio(a, b, fmt="{:.2f}"):
        return cell(b / a if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else None, fmt)

    rows = []
    for r in result["rows"]:
        one, two = r["k1"], r["k2"]
        rows.append([r["dataset"], r["pair"],
                     cell(one.get("runs_per_hour"), "{:.0f}"), cell(two.get("runs_per_hour"), "{:.0f}"),
                     ratio(one.get("runs_per_hour"), two.get("runs_per_hour")),
                     cell(one.get("test_accuracy")), cell(two.get("test_accuracy")),
                     ratio(one.get("test_accuracy"), two.get("test_accuracy"), "{:.3f}"),
                     cell(one.get("run_images_per_s"), "{:.0f}"), cell(two.get("run_images_per_s"), "{:.0f}"),
                     cell(one.get("run_cpu_utilisation"), "{:.2f}"), cell(two.get("run_cpu_utilisation"), "{:.2f}"),
                     f"{one.get('exploration_runs', '-')} / {two.get('exploration_runs', '-')}",
                     f"{cell(one.get('wall_s'), '{:.0f}')} / {cell(two.get('wall_s'), '{:.0f}')}",
                     f"{cell(one.get('run_steal_share'), '{:.3f}')} / {cell(two.get('run_steal_share'), '{:.3f}')}"])
    ray_rows = []
    for r in result["rows"]:
        local, ray = r["k2"], r.get("k2_ray")
        if not ray:
            continue
        numbers = all(isinstance(x.get("overhead_s"), (int, float)) for x in (ray, local))
        added = ray["overhead_s"] - local["overhead_s"] if numbers else None
        ray_rows.append([r["dataset"], r["pair"], cell(local.get("overhead_s"), "{:.1f}"),
                         cell(ray.get("overhead_s"), "{:.1f}"), cell(added, "{:+.1f}"),
                         cell(local.get("runs_per_hour"), "{:.0f}"), cell(ray.get("runs_per_hour"), "{:.0f}"),
                         cell(local.get("test_accuracy")), cell(ray.get("test_accuracy")),
                         f"{cell(ray.get('wall_s'), '{:.0f}')}", cell(ray.get("run_steal_share"), "{:.3f}")])
    ray_part = [
        "## What Ray adds per run (K=2, local pool against a local Ray instance, run right after)",
        "Overhead is a run's wall seconds beyond its training (sandbox start, preflight, prediction; for Ray also "
        "the task's scheduling and the trip of its files), the mean over the exploration runs.",
        markdown_table(["dataset", "pair", "overhead local s", "overhead Ray s", "Ray adds s", "runs/h local",
                        "runs/h Ray", "test local", "test Ray", "Ray wall s", "Ray steal"], ray_rows),
    ] if ray_rows else []
    return "\n\n".join([
        f"# `fit --parallel 2` against `--parallel 1`, `--time-budget {result['budget']:.0f}`, side by side",
        "Each pair ran one after the other on the same machine (K=1 first). Exploration runs are the runs "
        "before the final refit (the first pipeline, candidates, promotions); per hour of fit's whole wall "
        "time. Images/s and CPU are the mean over those runs; CPU is the share of the run's own slot (all "
        "cores with K=1, half of them with K=2). Test is the final model's.",
        markdown_table(["dataset", "pair", "runs/h K=1", "runs/h K=2", "K2/K1", "test K=1", "test K=2", "K2/K1",
                        "img/s K=1", "img/s K=2", "CPU K=1", "CPU K=2", "runs", "wall s", "steal"], rows),
        *ray_part,
        machine_markdown(details),
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["fashion-mnist"], choices=DATASETS)
    ap.add_argument("--budget", type=float, default=300.0, help="fit's --time-budget in seconds (default 300)")
    ap.add_argument("--pairs", type=int, default=1, help="K=1, K=2 pairs per dataset (default 1)")
    ap.add_argument("--ray", action="store_true",
                    help="also run K=2 on a local Ray instance after each pair (needs the ray extra)")
    ap.add_argument("--work", default=str(REPO / "benchmarks" / "runs" / "parallel"))
    ap.add_argument("--out", default=str(RESULTS / "parallel"))
    ap.add_argument("--report-only", action="store_true", help="rewrite the .md from the rows in the .json")
    return compare_and_report(ap.parse_args(), compare, report)


if __name__ == "__main__":
    sys.exit(main())
