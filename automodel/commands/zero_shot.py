"""`automodel zero-shot DATASET`: the published baseline, scored like everything else.

One plain request to the LLM ("write a PyTorch training script for an image
classification dataset with N classes of HxW images"), asking for the same
three-module format with the interfaces included, but with no team, no expert
knowledge and no profile beyond the class count and image size. The reply is
run ONCE in the sandbox and scored by the harness, and the whole thing is
recorded as a one-iteration run directory (`automodel show` and `report` read it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from automodel.commands.fit import seconds
from automodel.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser(
        "zero-shot",
        help="baseline: one plain LLM request for a training script, run once and scored",
        description="Ask the LLM once for a PyTorch training script (data.py, model.py, train.py following the "
        "interfaces), "
        "with no expert knowledge and no dataset detail beyond the class count and image size; run it once in "
        "the sandbox and score it. Recorded as a one-iteration run in WORKSPACE/RUN.",
    )
    p.add_argument("dataset", type=Path, help="image folder: train/<class>/..., <class>/..., or images + labels.csv")
    p.add_argument("--model", help="LLM model name (default: $AUTOMODEL_LLM_MODEL or gpt-4o-mini)")
    p.add_argument(
        "--base-url",
        help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL, else OpenAI)",
    )
    p.add_argument(
        "--time-limit", type=seconds, default=60.0, metavar="S", help="training seconds for the run (default 60)"
    )
    p.add_argument("--workspace", type=Path, default=Path("workspace"), help="folder for runs (default ./workspace)")
    p.add_argument("--name", help="run name (default: <dataset>-zeroshot-<date>-<time>)")
    p.add_argument("--seed", type=int, default=0, help="seed for the split and training (default 0)")
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="where training runs (default auto)"
    )
    p.add_argument(
        "--llm-cache", metavar="DIR", help="cache LLM replies here so the baseline can be replayed offline exactly"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from automodel.agents.llm import make_llm_brain
    from automodel.agents.llm.architect import zero_shot_pipeline
    from automodel.agents.registry import BrainConfig
    from automodel.core import JournalRecord, Usage
    from automodel.errors import BrainError, LLMConfigError
    from automodel.hardware import detect, resolve_device
    from automodel.sandbox.bundle import prepare_data
    from automodel.sandbox.iteration import RunConfig, run_iteration
    from automodel.search.calls import save_calls
    from automodel.search.loop import FitConfig
    from automodel.search.progress import Progress
    from automodel.search.workspace import reopen
    from automodel.session import DATA_DIR, start_run

    if not args.dataset.exists():
        raise UsageError(
            f"The dataset folder {args.dataset} does not exist. Give the folder that holds your images "
            f"(train/<class>/..., <class>/..., or images + labels.csv)."
        )
    # Fail on a missing key before any data work.
    brain = make_llm_brain(model=args.model, base_url=args.base_url, cache_dir=args.llm_cache)
    device = resolve_device(args.device)
    cfg = FitConfig(iters=1, time_per_iter=args.time_limit, seed=args.seed, device=device, search="greedy")
    brain_cfg = BrainConfig(agent="llm", model=args.model, base_url=args.base_url, cache_dir=args.llm_cache)
    progress = Progress()
    name = args.name or f"{args.dataset.resolve().name or 'dataset'}-zeroshot-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = start_run(args.dataset, args.workspace, name, cfg, brain_cfg, None, progress)
    run_dir.update_info(mode="zero-shot", llm=brain.config.public())

    ds, split = reopen(run_dir)
    images = ds.decode()
    bundle = prepare_data(ds, split, images, run_dir.path / DATA_DIR, device=device)
    hardware = detect(device)
    started = time.monotonic()
    iter_dir = run_dir.fresh_iter_dir(1)
    progress.note(
        f"automodel: zero-shot baseline with LLM {brain.config.model}: {len(ds.classes)} classes at "
        f"{images.image_size[0]}x{images.image_size[1]}, {args.time_limit:.0f} s of training"
    )
    try:
        pipeline = zero_shot_pipeline(brain.chat, len(ds.classes), tuple(images.image_size), images.channels)
        error = None
    except LLMConfigError:
        save_calls(brain.take_calls(), iter_dir, "zero_shot")
        raise
    except BrainError as err:  # the baseline's reply was unusable: that is its result
        pipeline, error = None, err
    usage: Usage = save_calls(brain.take_calls(), iter_dir, "zero_shot")

    if pipeline is not None:
        for module, source in pipeline.as_dict().items():
            (iter_dir / f"{module}.py").write_text(source, encoding="utf-8")
        result = run_iteration(
            iter_dir,
            bundle,
            RunConfig(time_limit=args.time_limit, device=device, seed=args.seed, threads=hardware.cpu_cores),
        ).to_dict()
    else:
        result = {
            "status": "brain_error",
            "val_accuracy": None,
            "test_accuracy": None,
            "error": {"phase": "write", "module": None, "type": type(error).__name__, "message": str(error)},
        }
    ok = result.get("status") == "ok" and result.get("val_accuracy") is not None
    err = result.get("error")
    record = JournalRecord(
        iteration=1,
        target="architect",
        instruction="zero-shot baseline: one plain request, no expert knowledge",
        reason="baseline",
        status=result.get("status"),
        accepted=ok,
        val_accuracy=result.get("val_accuracy"),
        test_accuracy=result.get("test_accuracy"),
        seconds=round(time.monotonic() - started, 2),
        error={k: err.get(k) for k in ("phase", "module", "type", "message")} if err else None,
        tokens=usage.tokens,
        cost_usd=usage.cost_or_none(),
        brain=f"zero-shot:{brain.name}",
        time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    ).to_json()
    if ok:
        run_dir.promote(1)
    run_dir.append(JournalRecord.from_json(record))
    brain.close()

    out = {
        "run": str(run_dir.path),
        "model": brain.config.model,
        "status": record["status"],
        "val_accuracy": record["val_accuracy"],
        "test_accuracy": record["test_accuracy"],
        "tokens": record["tokens"],
        "cost_usd": record["cost_usd"],
        "error": record["error"],
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        line = f"Zero-shot baseline ({brain.config.model}): {record['status']}"
        if ok:
            line += f", validation accuracy {record['val_accuracy']:.4f}, test accuracy " + (
                "-" if record["test_accuracy"] is None else f"{record['test_accuracy']:.4f}"
            )
        elif err:
            line += f" ({err.get('type')} in {err.get('module') or 'the reply'}: {str(err.get('message'))[:200]})"
        print(line)
        print(f"Recorded in {run_dir.path} (automodel show {run_dir.path}).")
    return 0
