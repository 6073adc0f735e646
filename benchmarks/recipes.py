"""Tune and check the expert Architect's recipes on real data with the real harness.

    python benchmarks/recipes.py --datasets cifar10-subset fashion-mnist --per-class 200 --budget 45
    python benchmarks/recipes.py --datasets cifar10-subset --set WIDTH=48 --set LR=0.1   # one variant
    python benchmarks/recipes.py --throughput         # SmallNet images/s per core (sizing constants)
    python benchmarks/recipes.py --table fashion-mnist --train-per-class 200 --budget 45   # rows so far, as markdown

For each dataset it writes the subset once (automodel.datasets.fetch, under
benchmarks/runs/recipes/), runs intake (load, split with seed 0, decode),
asks the Architect for a pipeline for this machine and budget, applies the
--set overrides to the constants they name (automodel.hparams, as the expert
engineers do), runs one iteration through automodel.sandbox.iteration and prints the
validation and test accuracy with the number of training steps and epochs.
Results are appended to benchmarks/results/recipes.jsonl with the machine's
details. Timings on a shared machine are noisy: compare variants run
back-to-back, and repeat with --seeds.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import RESULTS_DIR, RUNS_DIR, machine_details  # noqa: E402

WORK = RUNS_DIR / "recipes"


def subset_tag(per_class: int | None, train_per_class: int | None = None) -> str:
    return f"train{train_per_class}" if train_per_class else f"{per_class or 'all'}"


def dataset_dir(name: str, per_class: int | None, train_per_class: int | None = None) -> Path:
    from automodel.datasets.fetch import fetch
    from automodel.datasets.registry import load_registry

    dest = WORK / "data" / f"{name}-{subset_tag(per_class, train_per_class)}"
    if not dest.is_dir():
        fetch(load_registry().get(name), dest, per_class=None if train_per_class else per_class,
              train_per_class=train_per_class)
    return dest


def parse_sets(items: list[str]) -> dict[str, object]:
    out = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            out[key.strip()] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key.strip()] = raw  # a bare string such as resnet
    return out


def apply_sets(pipeline, changes: dict[str, object]):
    from automodel.hparams import read_hparams, set_hparams

    left = dict(changes)
    for module in ("data", "model", "train"):
        source = pipeline.module(module)
        mine = {k: v for k, v in left.items() if k in read_hparams(source)}
        if mine:
            pipeline = pipeline.with_module(module, set_hparams(source, mine))
            for k in mine:
                left.pop(k)
    if left:
        raise SystemExit(f"no module defines {', '.join(left)}")
    return pipeline


def run_one(name: str, per_class: int | None, budget: float, seed: int, changes: dict, describe: str | None,
            device: str = "cpu", threads: int = 0, train_per_class: int | None = None) -> dict:
    from automodel.agents.expert.architect import plan, render
    from automodel.core import Brief
    from automodel.hardware import detect
    from automodel.intake import load_dataset
    from automodel.sandbox.bundle import prepare_data
    from automodel.sandbox.iteration import RunConfig, run_iteration

    ds = load_dataset(dataset_dir(name, per_class, train_per_class), describe=describe)
    split = ds.split(seed=0)
    images = ds.decode(cache_dir=WORK / "cache", progress=False)
    bundle = prepare_data(ds, split, images, WORK / "bundles" / f"{name}-{subset_tag(per_class, train_per_class)}",
                          device=device)
    hardware = detect(device)
    if threads:
        hardware = dataclasses.replace(hardware, cpu_cores=threads)
    brief = Brief(profile=ds.profile(split), info=dict(bundle.info),
                  description=ds.description, hardware=hardware, time_per_iter=budget)
    facts, recipe = plan(brief)
    pipeline = apply_sets(render(recipe), changes)
    iter_dir = WORK / "iters" / f"{name}-{int(time.time() * 1000)}"
    iter_dir.mkdir(parents=True)
    for module in ("data", "model", "train"):
        (iter_dir / f"{module}.py").write_text(pipeline.module(module), encoding="utf-8")
    result = run_iteration(iter_dir, bundle, RunConfig(time_limit=budget, device=device, seed=seed,
                                                       threads=hardware.cpu_cores))
    loss = result.curves.get("train/loss") or []
    steps = int(loss[-1][0]) + 1 if loss else 0
    from automodel.hparams import read_hparams

    batch = read_hparams(pipeline.train).get("BATCH_SIZE", 0)
    acc = result.curves.get("train/accuracy") or []
    return {
        "dataset": name,
        "per_class": per_class,
        "train_per_class": train_per_class,
        "budget": budget,
        "seed": seed,
        "recipe": recipe.name,
        "set": changes,
        "status": result.status,
        "val": result.val_accuracy,
        "test": result.test_accuracy,
        "steps": steps,
        "epochs": round(steps * batch / max(1, bundle.info["num_train"]), 1),
        "train_acc_last": round(sum(v for _, v in acc[-5:]) / max(1, len(acc[-5:])), 3) if acc else None,
        "flips": facts.flips_allowed,
        "timings": result.timings,
        "error": result.error.text()[-600:] if result.error else None,
        "iter_dir": str(iter_dir),
    }


def run_steps(
    name: str,
    per_class: int | None,
    steps: int,
    seed: int,
    changes: dict,
    describe: str | None,
    budget: float = 45.0,
    threads: int = 1,
) -> dict:
    """Train in this process for a fixed number of STEPS (not seconds) with the harness's own
    classes (sandbox_child), so variants compare at equal work however busy the machine is."""
    import numpy as np
    import torch

    import automodel.sandbox.child as child
    from automodel.agents.expert.architect import plan, render
    from automodel.core import Brief
    from automodel.hardware import detect
    from automodel.intake import load_dataset
    from automodel.sandbox.bundle import prepare_data

    torch.set_num_threads(threads)
    ds = load_dataset(dataset_dir(name, per_class), describe=describe)
    split = ds.split(seed=0)
    images = ds.decode(cache_dir=WORK / "cache", progress=False)
    bundle = prepare_data(ds, split, images, WORK / "bundles" / f"{name}-{per_class or 'all'}")
    brief = Brief(
        profile=ds.profile(split),
        info=dict(bundle.info),
        description=ds.description,
        hardware=detect("cpu"),
        time_per_iter=budget,
    )
    facts, recipe = plan(brief)
    pipeline = apply_sets(render(recipe), changes)
    iter_dir = WORK / "steps" / f"{name}-{int(time.time() * 1000)}"
    iter_dir.mkdir(parents=True)
    mods = {}
    for module in ("data", "model", "train"):
        (iter_dir / f"{module}.py").write_text(pipeline.module(module), encoding="utf-8")
        mods[module] = child.load_module(module, iter_dir / f"{module}.py")
    info = type("Info", (), dict(bundle.info))()
    info.image_size = tuple(info.image_size)
    child.seed_all(torch, np, seed)
    train_tf, eval_tf = mods["data"].build_transforms(info)
    train_x = np.load(bundle.dir / "train_x.npy")
    data = child.TrainData(
        torch,
        train_x,
        np.load(bundle.dir / "train_y.npy"),
        train_tf,
        eval_tf,
        getattr(mods["data"], "mix_batch", None),
        info,
        0,
    )
    rec = child.Recorder(iter_dir)
    ctx = child.Context(torch, torch.device("cpu"), seed, 1e9, rec, "train", max_steps=steps)
    t0 = time.time()
    model = mods["train"].train(mods["model"].build_model(info), data, ctx)
    seconds = time.time() - t0
    rec.close()
    scores = {}
    for split_name, labels in (("val", bundle.val_y), ("test", bundle.test_y)):
        probs = child.predict(torch, model, np.load(bundle.dir / f"{split_name}_x.npy"), eval_tf, torch.device("cpu"))
        scores[split_name] = round(float((probs.argmax(1) == labels).mean()), 4)
    train_probs = child.predict(torch, model, train_x[:2000], eval_tf, torch.device("cpu"))
    from automodel.hparams import read_hparams

    batch = read_hparams(pipeline.train).get("BATCH_SIZE", 0)
    return {
        "dataset": name,
        "per_class": per_class,
        "steps": steps,
        "seed": seed,
        "recipe": recipe.name,
        "set": changes,
        "val": scores["val"],
        "test": scores["test"],
        "train_eval": round(float((train_probs.argmax(1) == data._labels[:2000]).mean()), 4),
        "epochs": round(steps * batch / bundle.info["num_train"], 1),
        "seconds": round(seconds, 1),
        "flips": facts.flips_allowed,
        "status": "ok",
        "error": None,
        "budget": None,
        "iter_dir": str(iter_dir),
    }


def table(name: str, per_class: int | None, train_per_class: int | None, budget: float, since: str = "") -> str:
    """The recorded rows of one dataset/subset/budget, one line per variant, mean over seeds, as markdown.

    Rows are those appended to recipes.jsonl (on or after the UTC date `since`); the
    variant without --set overrides is the first pipeline the Architect writes."""
    import statistics

    groups: dict[str, list[dict]] = {}
    for line in (RESULTS_DIR / "recipes.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if (row.get("dataset"), row.get("train_per_class"), row.get("budget"), row.get("status")) != (
            name,
            train_per_class,
            budget,
            "ok",
        ) or row.get("steps") is None:
            continue
        if not train_per_class and row.get("per_class") != per_class:
            continue
        if row.get("machine", {}).get("date_utc", "") < since:
            continue
        key = ", ".join(f"{k}={v}" for k, v in sorted(row["set"].items())) or "(first pipeline)"
        groups.setdefault(key, []).append(row)
    if not groups:
        return "no rows"
    base = (
        statistics.mean(r["test"] for r in groups.get("(first pipeline)", [])) if "(first pipeline)" in groups else None
    )
    lines = ["| variant | runs | val | test | test vs first | steps |", "|---|---|---|---|---|---|"]
    for key, rows in sorted(groups.items(), key=lambda kv: -statistics.mean(r["test"] for r in kv[1])):
        test = statistics.mean(r["test"] for r in rows)
        delta = f"{100 * (test - base):+.1f}" if base is not None else "-"
        lines.append(
            f"| {key} | {len(rows)} | {100 * statistics.mean(r['val'] for r in rows):.1f} | {100 * test:.1f} | "
            f"{delta} | {statistics.mean(r['steps'] for r in rows):.0f} |"
        )
    return "\n".join(lines)


def throughput(seconds: float = 2.0) -> None:
    """CPU seconds per training image of SmallNet variants, on one thread (robust on a shared machine)."""
    import torch

    from automodel.agents.expert.architect import render
    from automodel.agents.expert.recipes import DataRecipe, ModelRecipe, Recipe, TrainRecipe, small_cnn_rate

    torch.set_num_threads(1)
    for arch, width, stages, depth, side, channels in [
        ("convnet", 32, 3, 1, 32, 3),
        ("convnet", 48, 3, 1, 32, 3),
        ("convnet", 64, 3, 1, 32, 3),
        ("convnet", 32, 3, 2, 32, 3),
        ("resnet", 32, 3, 1, 32, 3),
        ("convnet", 32, 3, 1, 28, 1),
        ("resnet", 32, 4, 1, 64, 3),
        ("resnet", 24, 4, 1, 64, 3),
    ]:
        recipe = Recipe("bench", DataRecipe(input_size=side), ModelRecipe(arch, width, stages, depth), TrainRecipe())
        namespace: dict = {}
        exec(compile(render(recipe).model, "model.py", "exec"), namespace)
        info = type("Info", (), {"channels": channels, "num_classes": 10})()
        model = namespace["build_model"](info).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(64, channels, side, side).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (64,))
        for _ in range(2):  # warm-up steps are not timed
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        n, start = 0, time.process_time()
        while time.process_time() - start < seconds:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            n += 64
        rate = n / (time.process_time() - start)
        model_rate = small_cnn_rate(width, side, 1, stages, depth, arch)
        print(
            f"{arch:8s} width {width:3d} stages {stages} depth {depth} {side:3d}px c{channels}: {rate:7.0f} images/s "
            f"per core (recipes.small_cnn_rate predicts {model_rate:.0f})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["fashion-mnist", "cifar10-subset"])
    parser.add_argument("--per-class", type=int, default=200, help="images per class per split (0 = all)")
    parser.add_argument(
        "--train-per-class",
        type=int,
        default=0,
        help="cap only the training split at this many images per class and score on the whole "
        "test set, as in the issue's acceptance runs (overrides --per-class)",
    )
    parser.add_argument("--budget", type=float, default=45.0, help="training seconds per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a constant")
    parser.add_argument("--describe", default=None, help="dataset description given to the Architect")
    parser.add_argument("--throughput", action="store_true", help="measure SmallNet speed instead")
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="train in-process for this many steps instead of --budget seconds (load-independent)",
    )
    parser.add_argument("--spin", action="store_true", help="leave OMP_WAIT_POLICY alone (default: PASSIVE)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in the child and cores in the brief")
    parser.add_argument(
        "--table",
        metavar="DATASET",
        help="print the rows recorded so far for DATASET (with "
        "--per-class/--train-per-class and --budget) as a markdown table, and run nothing",
    )
    parser.add_argument("--since", default="", help="with --table: only rows recorded on or after this UTC date")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.table, args.per_class or None, args.train_per_class or None, args.budget, args.since))
        return 0
    if args.throughput:
        throughput()
        return 0
    changes = parse_sets(args.set)
    if not args.spin:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    machine = machine_details()
    for name in args.datasets:
        for seed in args.seeds:
            if args.steps:
                row = run_steps(
                    name,
                    args.per_class or None,
                    args.steps,
                    seed,
                    changes,
                    args.describe,
                    args.budget,
                    threads=args.threads or 1,
                )
                keys = ("dataset", "steps", "seed", "set", "val", "test", "train_eval", "epochs", "seconds")
            else:
                row = run_one(
                    name,
                    args.per_class or None,
                    args.budget,
                    seed,
                    changes,
                    args.describe,
                    threads=args.threads,
                    train_per_class=args.train_per_class or None,
                )
                keys = (
                    "dataset",
                    "per_class",
                    "train_per_class",
                    "budget",
                    "seed",
                    "recipe",
                    "set",
                    "status",
                    "val",
                    "test",
                    "steps",
                    "epochs",
                    "train_acc_last",
                )
            print(json.dumps({k: row[k] for k in keys}), flush=True)
            if row["error"]:
                print(row["error"], file=sys.stderr)
            with open(RESULTS_DIR / "recipes.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps({**row, "machine": machine}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
