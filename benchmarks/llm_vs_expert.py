"""The LLM brain against the built-in expert: same dataset, budget and seed, runs interleaved.

    python ../shared/tools/llm_bridge.py --dir /tmp/bridge --port 8790 &     # a real model answers there
    python benchmarks/llm_vs_expert.py --base-url http://127.0.0.1:8790/v1 --model bridge \\
        --datasets cifar10 fashion-mnist --search budget greedy --iters 8 --time-per-iter 60

For each dataset and search (`budget`, the default search, and `greedy`, the published protocol),
`automodel fit DATA --iters N --time-per-iter T --search S` runs once with `--agent expert` and
once with `--agent llm`, one after the other (the order alternates between pairs, so neither brain
always gets the quieter minutes). The budget is given as iterations because fit does not charge the
time spent waiting for the model to such a budget: a slow model gets the same training as the expert.

Reported per iteration of each run: kind, validation and test accuracy (test is read here, never by
a brain), the compute it got (steps, epochs, images/s, CPU, steal), LLM tokens and the seconds spent
waiting for the model; per pair: the final test accuracy of both, failed iterations after repairs,
tokens and waiting time. Datasets are the full shared sets by name, or paths of image folders.

Writes benchmarks/results/llm_vs_expert.{md,json}; each finished run is added to the .json as it
comes, and --report-only rewrites the .md from it. The real model's replies stay in each run's
iteration folders (llm/*.reply.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from automodel.search.workspace import iter_name  # noqa: E402
from benchmarks.common import (  # noqa: E402
    compare_and_report,
    machine_markdown,
    markdown_table,
    write_json,
)
from benchmarks.first_pipeline import DATASETS, RESULTS, materialize  # noqa: E402

BRAINS = ("expert", "llm")
COMPUTE = ("steps", "epochs", "images_per_second", "cpu_utilisation", "steal_share")


def dataset_path(spec: str, work: Path) -> Path:
    return materialize(spec, work / "data") if spec in DATASETS else Path(spec).resolve()


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def llm_calls(iter_dir: Path) -> tuple[int, float]:
    """Tokens and seconds of the LLM calls saved with one iteration (llm/calls.jsonl)."""
    tokens, seconds = 0, 0.0
    index = iter_dir / "llm" / "calls.jsonl"
    if index.is_file():
        for line in index.read_text().splitlines():
            call = json.loads(line)
            tokens += int(call.get("prompt_tokens") or 0) + int(call.get("completion_tokens") or 0)
            seconds += float(call.get("seconds") or 0.0)
    return tokens, round(seconds, 1)


def run_fit(args, data: Path, work: Path, brain: str, search: str) -> dict[str, Any]:
    name = f"{data.name}-{search}-{brain}-s{args.seed}-{int(time.time())}"
    env = {**os.environ, "AUTOMODEL_CACHE": str(work / "cache"), "AUTOMODEL_LLM_TIMEOUT": str(args.llm_timeout)}
    command = [sys.executable, "-m", "automodel.cli", "fit", str(data), "--iters", str(args.iters),
               "--time-per-iter", str(args.time_per_iter), "--search", search, "--agent", brain,
               "--seed", str(args.seed), "--workspace", str(work / "runs"), "--name", name, "--device", args.device,
               "-q"]
    if args.candidates:
        command += ["--candidates", str(args.candidates)]
    if brain == "llm":
        command += ["--base-url", args.base_url, "--model", args.model]
    t0 = time.time()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    wall = round(time.time() - t0, 1)
    run = work / "runs" / name
    show = subprocess.run([sys.executable, "-m", "automodel.cli", "show", str(run), "--json"],
                          capture_output=True, text=True, env=env, cwd=REPO)
    if show.returncode != 0:
        return {"brain": brain, "search": search, "error": (proc.stderr or show.stderr)[-1500:], "wall_s": wall}
    outcome = json.loads(show.stdout)
    rows = []
    for r in outcome["iterations"]:
        folder = run / iter_name(r["iteration"])
        metrics = read_json(folder / "metrics.json") or {}
        tokens, waited = llm_calls(folder)
        rows.append({"iteration": r["iteration"], "kind": r.get("kind"), "status": r.get("status"),
                     "accepted": r.get("accepted"), "target": r.get("target"),
                     "instruction": (r.get("instruction") or "")[:160],
                     "val_accuracy": r.get("val_accuracy"), "test_accuracy": r.get("test_accuracy"),
                     **{k: (metrics.get("compute") or {}).get(k) for k in COMPUTE},
                     "tokens": tokens, "llm_seconds": waited})
    final = outcome.get("final") or {}
    return {"brain": brain, "search": search, "returncode": proc.returncode, "wall_s": wall, "run": str(run),
            "final_kind": final.get("kind"),
            "final_test": final.get("test_accuracy", (outcome.get("best") or {}).get("test_accuracy")),
            "iteration_1_test": rows[0]["test_accuracy"] if rows else None,
            "failed": sum(1 for r in rows if r["status"] != "ok"),
            "tokens": sum(r["tokens"] for r in rows), "llm_seconds": round(sum(r["llm_seconds"] for r in rows), 1),
            "iterations": rows}


def compare(args, out_json: Path, details: dict[str, Any]) -> dict[str, Any]:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    result = {"iters": args.iters, "time_per_iter": args.time_per_iter, "seed": args.seed, "model": args.model,
              "pairs": []}
    for number, (spec, search) in enumerate((d, s) for d in args.datasets for s in args.search):
        data = dataset_path(spec, work)
        order = BRAINS if number % 2 == 0 else BRAINS[::-1]
        runs = {brain: run_fit(args, data, work, brain, search) for brain in order}
        result["pairs"].append({"dataset": data.name, "search": search, "order": list(order), **runs})
        print(json.dumps({k: v for k, v in result["pairs"][-1].items() if k not in BRAINS}), flush=True)
        write_json(out_json, {"machine": details, **result})
    return result


def _cell(value: Any, fmt: str = "{:.4f}") -> str:
    return "-" if value is None else fmt.format(value)


def report(result: dict[str, Any], details: dict[str, Any]) -> str:
    summary, sections = [], []
    for pair in result["pairs"]:
        e, m = pair.get("expert") or {}, pair.get("llm") or {}
        delta = (m["final_test"] - e["final_test"]) if m.get("final_test") is not None and \
            e.get("final_test") is not None else None
        summary.append([pair["dataset"], pair["search"], _cell(e.get("iteration_1_test")), _cell(e.get("final_test")),
                        _cell(m.get("iteration_1_test")), _cell(m.get("final_test")), _cell(delta, "{:+.4f}"),
                        f"{e.get('failed', '-')} / {m.get('failed', '-')}", m.get("tokens", "-"),
                        _cell(m.get("llm_seconds"), "{:.0f}"), " then ".join(pair["order"])])
        for brain in BRAINS:
            run = pair.get(brain) or {}
            if "error" in run:
                sections.append(f"### {pair['dataset']}, {pair['search']}, {brain}\n\nfailed: `{run['error']}`")
                continue
            rows = [[r["iteration"], r["kind"] or "-", r["status"], "yes" if r["accepted"] else "",
                     f"{r['target'] or '-'}: {r['instruction']}" if r["target"] else "-",
                     _cell(r["val_accuracy"]), _cell(r["test_accuracy"]), _cell(r["steps"], "{:.0f}"),
                     _cell(r["epochs"], "{:.1f}"), _cell(r["images_per_second"], "{:.0f}"),
                     _cell(r["cpu_utilisation"], "{:.2f}"), _cell(r["steal_share"], "{:.3f}"), r["tokens"],
                     _cell(r["llm_seconds"], "{:.0f}")] for r in run.get("iterations", [])]
            sections.append(f"### {pair['dataset']}, {pair['search']}, {brain} (final: {run.get('final_kind')}, "
                            f"{_cell(run.get('final_test'))} test; {run.get('wall_s')} s wall)\n\n" + markdown_table(
                                ["it.", "kind", "status", "kept", "change", "val", "test", "steps", "epochs",
                                 "img/s", "CPU", "steal", "tokens", "model wait s"], rows))
    return "\n\n".join([
        f"# The LLM brain ({result['model']}) against the built-in expert",
        f"`automodel fit DATA --iters {result['iters']} --time-per-iter {result['time_per_iter']:g} --search S "
        f"--seed {result['seed']}` with `--agent expert` and `--agent llm`, run one after the other per pair. "
        "Test accuracy is read by the benchmark only.",
        markdown_table(["dataset", "search", "expert it. 1", "expert final", "LLM it. 1", "LLM final",
                        "LLM - expert", "failed it. (expert / LLM)", "LLM tokens", "model wait s", "order"], summary),
        "\n\n".join(sections),
        machine_markdown(details),
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["cifar10", "fashion-mnist"],
                    help=f"shared sets ({', '.join(DATASETS)}) or image folder paths")
    ap.add_argument("--search", nargs="+", choices=("budget", "greedy"), default=["budget", "greedy"])
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--time-per-iter", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--candidates", type=int, help="fit's --candidates (per round of the budget search)")
    ap.add_argument("--base-url", default="http://127.0.0.1:8790/v1", help="the OpenAI-compatible server")
    ap.add_argument("--model", default="bridge")
    ap.add_argument("--llm-timeout", type=float, default=1800.0, help="seconds to wait for one reply")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", default=str(REPO / "benchmarks" / "runs" / "llm_vs_expert"))
    ap.add_argument("--out", default=str(RESULTS / "llm_vs_expert"))
    ap.add_argument("--report-only", action="store_true", help="rewrite the .md from the .json of an earlier run")
    return compare_and_report(ap.parse_args(), compare, report)


if __name__ == "__main__":
    sys.exit(main())
