"""`automodel run DATASET --pipeline DIR`: run one hand-written or generated pipeline once.

Loads and splits the dataset (seeded), decodes it (cached), prepares the
sandbox's data bundle, copies DIR's data.py/model.py/train.py into an
iteration directory and runs them in the sandbox exactly as `fit` does, then
prints the honestly scored result. Everything it writes goes under --out
(default DIR/.run/): data/ (the bundle) and iter/ (sources, logs, metrics.json,
model.pt, predictions).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from automodel.core import MODULES
from automodel.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser("run", help="run one pipeline folder (data.py, model.py, train.py) once and score it",
                       description="Run the three modules in --pipeline DIR as one sandboxed iteration on DATASET and "
                                   "print the validation and test accuracy computed by automodel itself.")
    p.add_argument("dataset", type=Path, help="dataset folder (imagefolder, flat or csv layout)")
    p.add_argument(
        "--pipeline", type=Path, required=True, metavar="DIR", help="folder with data.py, model.py and train.py"
    )
    p.add_argument("--json", action="store_true", help="print the full result record (metrics.json) as JSON")
    p.add_argument(
        "--time-limit", type=float, default=60.0, metavar="SECONDS", help="training time budget (default: 60)"
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to train (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of training (default: 0)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where to write the bundle and the iteration (default: PIPELINE/.run)",
    )
    p.add_argument(
        "--sandbox",
        choices=("bwrap", "unshare", "none"),
        default=None,
        help="force an isolation level (default: the best that works here; see automodel/sandbox/levels.py)",
    )
    p.add_argument("--threads", type=int, default=0, help="CPU threads for training (default: all cores)")
    p.set_defaults(func=run)


def _check_args(args) -> None:
    from automodel.intake.layouts import check_folder

    check_folder(args.dataset)  # before the sandbox probe, and the same error (exit 3) as fit and inspect
    pipeline = args.pipeline
    if not pipeline.is_dir():
        raise UsageError(
            f"--pipeline {pipeline} is not a folder. Point it at a folder holding data.py, model.py and train.py "
            "(for example pipelines/reference)."
        )
    missing = [f"{m}.py" for m in MODULES if not (pipeline / f"{m}.py").is_file()]
    if missing:
        raise UsageError(
            f"--pipeline {pipeline} lacks {', '.join(missing)}: a pipeline is the three files data.py, model.py "
            "and train.py (see interfaces/ for what each must define; pipelines/reference is a working example)."
        )
    if args.time_limit <= 0:
        raise UsageError(f"--time-limit must be a positive number of seconds, not {args.time_limit}.")
    dataset = args.dataset.resolve()
    out = (args.out or pipeline / ".run").resolve()
    if out == dataset or dataset in out.parents:
        raise UsageError(
            f"--out {out} is inside the dataset folder {dataset}; the sandbox must never see the dataset. "
            "Choose an output folder outside it."
        )


def prepare_iteration(pipeline: Path, iter_dir: Path) -> None:
    """Copy the three modules into a fresh iteration directory (old outputs removed)."""
    if iter_dir.exists():
        shutil.rmtree(iter_dir)
    iter_dir.mkdir(parents=True)
    for module in MODULES:
        shutil.copyfile(pipeline / f"{module}.py", iter_dir / f"{module}.py")


def run(args) -> int:
    from automodel.hardware import cpu_cores, resolve_device
    from automodel.intake import load_dataset
    from automodel.sandbox.bundle import prepare_data
    from automodel.sandbox.iteration import RunConfig, run_iteration
    from automodel.sandbox.probe import choose_level
    from automodel.weights import find_cached

    _check_args(args)
    level = choose_level(args.sandbox)
    device = resolve_device(args.device)
    ds = load_dataset(args.dataset)
    split = ds.split(seed=args.seed)
    images = ds.decode()
    out = (args.out or args.pipeline / ".run").resolve()
    bundle = prepare_data(ds, split, images, out / "data", device=device)
    iter_dir = out / "iter"
    prepare_iteration(args.pipeline, iter_dir)
    weights = find_cached()  # as fit does: a pipeline that sets PRETRAINED finds the user's cached weights
    config = RunConfig(
        time_limit=args.time_limit,
        device=device,
        seed=args.seed,
        threads=args.threads or cpu_cores(),
        sandbox=level,
        cache_dir=weights.hub_dir,
        pretrained_available=bool(weights.names),
    )
    result = run_iteration(iter_dir, bundle, config)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(render(result, ds, bundle, iter_dir))
    return 0 if result.ok else 1


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def render(result, ds, bundle, iter_dir: Path) -> str:
    """A few readable lines: data, sandbox, status and scores, timings, where the files are."""
    info = bundle.info
    h, w = info["image_size"]
    counts = bundle.counts
    lines = [
        f"data:     {ds.root} ({counts['train']} train / {counts['val']} val / {counts['test']} test images, "
        f"{info['num_classes']} classes, {h}x{w}x{info['channels']})",
        f"sandbox:  {result.sandbox.kind}"
        + (f" (NOT protected: {', '.join(result.sandbox.missing)})" if result.sandbox.missing else " (full isolation)"),
        f"status:   {result.status}",
    ]
    if result.status == "ok":
        lines.append(
            f"accuracy: val {_fmt(result.val_accuracy)}   test {_fmt(result.test_accuracy)}   (scored by automodel "
            "from the predictions)"
        )
        if result.interrupted:
            lines.append(
                "note:     train() ignored ctx.should_stop() and was interrupted"
                + (
                    " ; scored with its last ctx.checkpoint()"
                    if result.used_checkpoint
                    else "; scored with its current weights"
                )
            )
    if result.error:
        lines.append("error:    " + result.error.text().replace("\n", "\n          "))
    t = result.timings
    order = (
        "sandbox_start",
        "imports",
        "data_ready",
        "contract",
        "preflight",
        "first_batch",
        "training",
        "prediction",
        "total",
    )
    lines.append("timings:  " + ", ".join(f"{k.replace('_', ' ')} {t[k]:.2f} s" for k in order if k in t))
    lines.append(f"files:    {iter_dir} (metrics.json, model.pt, stdout.txt, stderr.txt)")
    return "\n".join(lines)
