"""`automodel show RUN_DIR`: one row per iteration, and the best."""

from __future__ import annotations

import json
from pathlib import Path

from automodel.search.acceptance import noise_note
from automodel.search.loop import summarize_run
from automodel.search.progress import pct
from automodel.search.tree import tree_lines
from automodel.search.workspace import RunDir


def register(sub) -> None:
    p = sub.add_parser("show", help="list a run's iterations: who changed what, status, scores, time",
                       description="Print one row per iteration of RUN_DIR, the budget search's tree of candidates, "
                       "the best iteration and the final model.")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    run_dir = RunDir.open(args.run_dir)
    outcome = summarize_run(run_dir)
    if args.json:
        print(json.dumps(outcome, indent=2))
        return 0
    llm = any(r.get("tokens") for r in outcome["iterations"])
    head = f"{'iter':>4}  {'engineer':<9} {'status':<14} {'kept':<4} {'val':>7} {'test':>7} {'secs':>6}"
    head += f" {'epochs':>6} {'img/s':>6} {'cpu':>4}"
    head += f" {'tokens':>7} {'cost$':>8}" if llm else ""
    print(head + "  instruction")
    for r in outcome["iterations"]:
        row = (
            f"{r['iteration']:>4}  {(r['target'] or '-'):<9} {r['status']:<14} {'yes' if r['accepted'] else 'no':<4} "
            f"{pct(r['val_accuracy']):>7} {pct(r['test_accuracy']):>7} {r['seconds']:>6.0f}"
            f" {_compute_cells(r.get('compute') or {})}"
        )
        if llm:
            row += f" {r.get('tokens') or 0:>7} {('%.4f' % r['cost_usd']) if r.get('cost_usd') is not None else '-':>8}"
        print(row + "  " + (r.get("instruction") or "")[:90])
    if tree := tree_lines(outcome["iterations"], outcome.get("final")):
        print("\nsearch tree (each attempt under the pipeline it started from):")
        for line in tree:
            print("  " + line)
        print()
    best = outcome["best"]
    if best:
        print(
            f"best: iteration {best['iteration']}  val {pct(best['val_accuracy'])}  test {pct(best['test_accuracy'])}"
        )
    else:
        print("best: none yet")
    if final := outcome.get("final"):
        print(f"final: {final['kind']} of iteration(s) {', '.join(map(str, final['members']))}  "
              f"test {pct(final['test_accuracy'])}  ({final['seconds'] or 0:.0f} s)  {final.get('reason') or ''}")
    if outcome["failed_share"] is not None:
        print(f"failed iterations: {outcome['failed_share']:.0%}")
    if note := noise_note(outcome):
        print(note)
    if llm:
        cost = outcome["cost_usd"]
        print(
            f"tokens: {outcome['tokens']}"
            + (f"  cost: ${cost:.4f}" if cost is not None else "  cost: unknown (model not in the price table)")
        )
    return 0


def _compute_cells(compute: dict) -> str:
    """Epochs, training images/s and CPU utilisation of one iteration ("-" where not measured)."""
    epochs, rate, cpu = (compute.get(k) for k in ("epochs", "images_per_second", "cpu_utilisation"))
    return (f"{'-' if epochs is None else f'{epochs:.1f}':>6} {'-' if rate is None else f'{rate:.0f}':>6} "
            f"{'-' if cpu is None else f'{100 * cpu:.0f}%':>4}")
