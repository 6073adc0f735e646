"""`fit --time-budget B` against a hand-tuned script with the same wall time, side by side.

For each dataset (the full shared sets, written once with materialize.py) and seed:

    automodel fit DATA --time-budget B --agent expert          (its whole wall time W is measured)
    python ../shared/tools/reference_cnn.py --data DATA --budget-seconds W

one after the other, so both see the same machine at nearly the same time.
The script gets exactly fit's wall time (B plus fit's start-up and report).
Recorded for fit: iteration 1's test accuracy, the best candidate's (the best
iteration on validation), the final model's and what it is (refit, ensemble,
iteration), candidates run, the plan, and the compute of the final refit
(images/s, epochs, CPU, steal); for the script: test accuracy, images/s,
epochs, CPU and steal around its process.

    python benchmarks/p1_budget.py --datasets cifar10 fashion-mnist mnist hymenoptera --budget 600

Writes benchmarks/results/p1_budget.{md,json}; each finished pair is also
appended to the .json as it comes, so a long run that is stopped keeps its rows.
`--append --first-seed S` adds seeds to an earlier run's rows (each row names
the commit it ran), e.g. more hymenoptera seeds:

    python benchmarks/p1_budget.py --datasets hymenoptera --first-seed 1 --seeds 2 --append
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import (  # noqa: E402
    compare_and_report,
    machine_markdown,
    markdown_table,
    read_results,
    write_json,
)
from benchmarks.first_pipeline import DATASETS, RESULTS, materialize, run_reference, steal_counters  # noqa: E402


def run_fit(data: Path, work: Path, budget: float, seed: int, search: str, extra: tuple[str, ...] = ()) -> dict:
    """`fit --time-budget` on `data` (with more options in `extra`) and the figures of its run."""
    name = f"{data.name}-{search}-s{seed}-{int(time.time())}"
    env = {**os.environ, "AUTOMODEL_CACHE": str(work / "cache")}
    before = steal_counters()
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "automodel.cli", "fit", str(data), "--time-budget", str(budget), "--iters", "200",
         "--search", search, "--agent", "expert", "--seed", str(seed), "--workspace", str(work / "runs"),
         "--name", name, "--device", "cpu", "-q", *extra],
        capture_output=True, text=True, env=env, cwd=REPO,
    )
    wall = time.time() - t0
    after = steal_counters()
    if proc.returncode != 0:
        return {"error": proc.stderr[-1500:], "wall_s": round(wall, 1)}
    run = work / "runs" / name
    show = json.loads(subprocess.run([sys.executable, "-m", "automodel.cli", "show", str(run), "--json"],
                                     capture_output=True, text=True, env=env, cwd=REPO, check=True).stdout)
    rows = show["iterations"]
    final = show.get("final") or {}
    best = show.get("best") or {}
    refit = next((r for r in rows if r.get("kind") == "refit"), None)
    compute = (refit or {}).get("compute") or {}
    plan = json.loads((run / "run.json").read_text()).get("search_plan") or {}
    return {
        "iteration_1_test": rows[0].get("test_accuracy") if rows else None,
        "best_candidate": best.get("iteration"),
        "best_candidate_val": best.get("val_accuracy"),
        "best_candidate_test": best.get("test_accuracy"),
        "final_kind": final.get("kind"),
        "final_members": final.get("members"),
        "test_accuracy": final.get("test_accuracy", best.get("test_accuracy")),
        "final_training_s": final.get("training_seconds"),
        "candidates": sum(1 for r in rows if r.get("kind") in ("candidate", None)),
        "promotions": sum(1 for r in rows if r.get("kind") == "promotion"),
        "contended": sum(1 for r in rows if r.get("contended")),
        "rung0_s": (plan.get("rungs") or [None])[0],
        "wall_s": round(wall, 1),
        "images_per_s": compute.get("images_per_second"),
        "epochs": compute.get("epochs"),
        "cpu_utilisation": compute.get("cpu_utilisation"),
        "steal_share": compute.get("steal_share"),
        "run_steal_share": round((after[1] - before[1]) / max(1, after[0] - before[0]), 3),
        "run": str(run),
    }


def compare(args, out_json: Path, details: dict) -> dict:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    result = {"budget": args.budget, "search": args.search, "rows": []}
    if args.append and out_json.is_file():
        saved, before = read_results(out_json)
        if (saved["budget"], saved["search"]) != (args.budget, args.search):
            raise SystemExit(f"{out_json} holds --budget {saved['budget']} --search {saved['search']}; "
                             "--append adds only rows of the same setting")
        # Rows of a file written before rows named their commit ran at that file's commit.
        result["rows"] = [{"commit": before.get("commit"), **r} for r in saved["rows"]]
    first, last = args.first_seed, args.first_seed + args.seeds
    # Hymenoptera's 153 test images need more seeds than the others: its extra seeds run at the end.
    pairs = [(seed, name) for seed in range(first, last) for name in args.datasets]
    if "hymenoptera" in args.datasets:
        pairs += [(seed, "hymenoptera") for seed in range(last, args.hymenoptera_seeds)]
    for seed, name in pairs:
        data = materialize(name, work / "data")
        fit = run_fit(data, work, args.budget, seed, args.search)
        ref = run_reference(data, fit["wall_s"], seed) if "error" not in fit else {"error": "fit failed"}
        # A new pair replaces an earlier one of the same dataset and seed (one marked excluded stays, named).
        result["rows"] = [r for r in result["rows"]
                          if r.get("excluded") or (r["dataset"], r["seed"]) != (name, seed)]
        result["rows"].append({"dataset": name, "seed": seed, "commit": details["commit"], "fit": fit,
                               "reference": ref})
        print(json.dumps(result["rows"][-1]), flush=True)
        write_json(out_json, {"machine": details, **result})
    return result


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def report(result: dict, details: dict) -> str:
    def cell(v, fmt="{:.4f}"):
        return "-" if v is None else fmt.format(v)

    rows, means = [], {}
    # A pair whose runs overlapped other work on the machine is kept in the .json with the reason
    # ("excluded") and left out of the tables: its figures compare unequal compute.
    excluded = [r for r in result["rows"] if r.get("excluded")]
    for r in (r for r in result["rows"] if not r.get("excluded")):
        f, s = r["fit"], r["reference"]
        rows.append([r["dataset"], r["seed"], r.get("commit", details["commit"])[:7],
                     cell(f.get("iteration_1_test")), cell(f.get("best_candidate_test")),
                     cell(f.get("test_accuracy")), cell(s.get("test_accuracy")),
                     f"{f.get('final_kind') or '-'} {f.get('final_members') or ''}", f.get("candidates", "-"),
                     cell(f.get("rung0_s"), "{:.0f}"), cell(f.get("final_training_s"), "{:.0f}"),
                     cell(s.get("training_s"), "{:.0f}"), cell(f.get("wall_s"), "{:.0f}"),
                     cell(f.get("images_per_s"), "{:.0f}"), cell(s.get("images_per_s"), "{:.0f}"),
                     cell(f.get("epochs"), "{:.1f}"), cell(s.get("epochs"), "{:.1f}"),
                     cell(f.get("cpu_utilisation"), "{:.2f}"), cell(s.get("cpu_utilisation"), "{:.2f}"),
                     cell(f.get("run_steal_share"), "{:.3f}"), cell(s.get("run_steal_share"), "{:.3f}")])
        m = means.setdefault(r["dataset"], {k: [] for k in ("it1", "best", "final", "ref")})
        for key, value in (("it1", f.get("iteration_1_test")), ("best", f.get("best_candidate_test")),
                           ("final", f.get("test_accuracy")), ("ref", s.get("test_accuracy"))):
            m[key].append(value)
    summary = []
    for d, m in means.items():
        final, ref = _mean(m["final"]), _mean(m["ref"])
        spread = [v for v in m["final"] if v is not None]
        summary.append([d, len(m["final"]), cell(_mean(m["it1"])), cell(_mean(m["best"])), cell(final), cell(ref),
                        cell(final / ref if final and ref else None, "{:.3f}"),
                        cell(max(spread) - min(spread) if len(spread) > 1 else None),
                        "yes" if final is not None and ref is not None and final >= ref else "no"])
    return "\n\n".join([
        f"# `fit --time-budget {result['budget']:.0f}` against the hand-tuned script, at equal wall time",
        f"`automodel fit DATA --time-budget {result['budget']:.0f} --search {result['search']}` (built-in expert) "
        "and `../shared/tools/reference_cnn.py --budget-seconds W`, where W is fit's whole wall time, run one after "
        "the other for each dataset and seed on the full shared sets. Test sets are the shared test sets.",
        markdown_table(["dataset", "runs", "iteration 1", "best candidate", "final model", "script", "final/script",
                        "final spread over seeds", "final >= script"], summary),
        markdown_table(["dataset", "seed", "commit", "it. 1 test", "best cand. test", "final test", "script test",
                        "final", "candidates", "rung-0 s", "final train s", "script train s", "wall s", "final img/s",
                        "script img/s", "final epochs", "script epochs", "final CPU", "script CPU",
                        "steal (fit)", "steal (script)"], rows),
        "".join(f"Left out: {r['dataset']} seed {r['seed']} (fit {r['fit'].get('test_accuracy')}, script "
                f"{r['reference'].get('test_accuracy')}): {r['excluded']}\n" for r in excluded) or "Left out: none.",
        "Compute columns: fit's are its final refit's training phase (measured by the parent), the script's over "
        "its training (images/s, epochs) and its whole process (CPU). Steal is the share of the machine's CPU time "
        "the hypervisor took during each whole run (/proc/stat).",
        machine_markdown(details),
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--budget", type=float, default=600.0, help="fit's --time-budget in seconds (default 600)")
    ap.add_argument("--search", choices=("budget", "greedy"), default="budget")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per dataset (default 1)")
    ap.add_argument("--first-seed", type=int, default=0, help="the first seed (default 0)")
    ap.add_argument("--hymenoptera-seeds", type=int, default=3,
                    help="hymenoptera runs seeds up to this one too (default 3: seeds 0-2)")
    ap.add_argument("--append", action="store_true",
                    help="keep the rows already in the .json; a new pair replaces the row of its dataset and seed")
    ap.add_argument("--work", default=str(REPO / "benchmarks" / "runs" / "p1_budget"))
    ap.add_argument("--out", default=str(RESULTS / "p1_budget"))
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the .md from the rows already in the .json (a run that was stopped)")
    return compare_and_report(ap.parse_args(), compare, report)


if __name__ == "__main__":
    sys.exit(main())
