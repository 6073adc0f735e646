"""`automodel fit DATASET`: run the agent loop and keep the best pipeline."""

from __future__ import annotations

import argparse
from pathlib import Path

from automodel.agents.registry import AGENT_CHOICES, BRAINS, BrainConfig
from automodel.errors import UsageError
from automodel.hardware import detect, resolve_device
from automodel.search.loop import FitConfig
from automodel.search.plan import MIN_TRAIN_SECONDS, OVERHEAD_GUESS
from automodel.search.progress import Progress
from automodel.search.workspace import default_run_name


def add_brain_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("brain (who plays the agent roles)")
    g.add_argument(
        "--agent",
        choices=AGENT_CHOICES,
        default="auto",
        help="; ".join(f"{name}: {about}" for name, (_, about) in BRAINS.items())
        + "; auto (default): the LLM when OPENAI_API_KEY or --base-url/OPENAI_BASE_URL is set, else the expert",
    )
    g.add_argument("--model", help="LLM model name (default: $AUTOMODEL_LLM_MODEL or gpt-4o-mini)")
    g.add_argument(
        "--base-url",
        help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL, else OpenAI)",
    )
    g.add_argument(
        "--init",
        choices=("single", "sequential"),
        default="single",
        help="single (default): the Architect writes the whole pipeline in one call; sequential: data, model, train "
        "in three calls (published ablation)",
    )
    g.add_argument("--llm-cache", metavar="DIR", help="cache LLM replies here so a run can be replayed offline exactly")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value < 5:
        raise argparse.ArgumentTypeError(f"must be at least 5 seconds, got {text}")
    return value


def share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.6, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def register(sub) -> None:
    p = sub.add_parser(
        "fit",
        help="train a classifier for an image folder with the agent loop",
        description="Run the agent loop on DATASET: the Project Architect writes a pipeline, then the Performance "
        "Analyst sends instructions to the engineers, and an edit is kept only if its validation accuracy improves. "
        "The default budget search spends the budget (--time-budget, else --iters x --time-per-iter) on rounds of "
        "short candidate runs and reserves the end for the final model: the best pipeline retrained on train+val "
        "(or an ensemble of the best, when it wins by more than noise). --search greedy runs the published loop: "
        "one edit per iteration at full length, the best iteration is the result. Everything is written to "
        "WORKSPACE/RUN.",
    )
    p.add_argument("dataset", type=Path, help="image folder: train/<class>/..., <class>/..., or images + labels.csv")
    p.add_argument(
        "--iters", type=positive_int, default=20,
        help="iterations in all, the first pipeline included (default 20); with 1 and a dataset that has a test "
        "split, the budget search trains that one pipeline on train+val, since nothing is chosen",
    )
    p.add_argument(
        "--time-per-iter", type=seconds, default=60.0, metavar="S", help="training seconds per iteration (default 60)"
    )
    p.add_argument(
        "--time-budget", type=seconds, metavar="S", help="wall-clock seconds for the whole run (default: no limit)"
    )
    g = p.add_argument_group("search (how the budget is spent)")
    g.add_argument(
        "--search", choices=("budget", "greedy"), default=FitConfig.search,
        help="budget (default): rounds of K short candidates, promotion of the best to longer runs when the budget "
        "allows, then a final refit on train+val; greedy: the published protocol, one edit per iteration at "
        "--time-per-iter, kept if better",
    )
    g.add_argument(
        "--candidates", type=positive_int, metavar="K",
        help="budget search: candidates the Analyst proposes per round (default 3)",
    )
    g.add_argument(
        "--parallel", type=positive_int, default=FitConfig.parallel, metavar="K",
        help="budget search: candidates that train at once on this machine, each a sandboxed child with 1/K of "
        "the cores and memory (and a GPU, or a share of one); K candidates per round by default. Worth it "
        "when one small network cannot use the whole machine (default %(default)s)",
    )
    g.add_argument(
        "--executor", choices=("local", "ray"), default=FitConfig.executor,
        help="where pipelines run: local (default), sandboxed children on this machine; ray, Ray tasks on a "
        "local Ray instance or, with --ray-address, on a cluster (each task runs the same sandboxed child on "
        'its node). Ray is optional: pip install "automodel[ray]"',
    )
    g.add_argument(
        "--ray-address", metavar="ADDR",
        help="with --executor ray: the cluster to join, e.g. auto (the one `ray start --head` made on this "
        "machine) or ray://HOST:10001; default: start a local Ray instance for this run",
    )
    g.add_argument(
        "--final-share", type=share, default=FitConfig.final_share, metavar="F",
        help="budget search: share of the budget reserved for the final refit on train+val (default %(default)s)",
    )
    p.add_argument("--workspace", type=Path, default=Path("workspace"), help="folder for runs (default ./workspace)")
    p.add_argument("--name", help="run name (default: <dataset>-<date>-<time>)")
    p.add_argument("--seed", type=int, default=0, help="seed for the split, training and the brain (default 0)")
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="where training runs (default auto)"
    )
    p.add_argument(
        "--describe",
        metavar="TEXT",
        help="what the images are and what matters (else description.txt/README.md in the folder)",
    )
    p.add_argument(
        "--min-delta",
        type=float,
        default=FitConfig.min_delta,
        help="validation accuracy an edit must add to be kept (default %(default)s)",
    )
    p.add_argument(
        "--min-z",
        type=float,
        default=FitConfig.min_z,
        help="an edit must also beat the best on the validation images it changes by this many standard "
        "deviations of a coin-flip difference, so gains chance alone would give are not kept; stricter, "
        "but also rejects real small gains on small validation sets (default %(default)s: --min-delta only)",
    )
    p.add_argument(
        "--max-repairs",
        type=int,
        default=FitConfig.max_repairs,
        help="repair attempts per failed iteration (default %(default)s)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="start even when the feasibility check finds that the run would be meaningless (see automodel inspect)",
    )
    p.add_argument(
        "--download-weights",
        action="store_true",
        help="before iteration 1, download the pretrained backbone the Architect would fine-tune for photos into "
        "your Hugging Face cache (needs the network; same as `automodel weights fetch NAME`)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    add_brain_options(p)
    p.set_defaults(func=run)


def brain_config(args) -> BrainConfig:
    return BrainConfig(
        agent=args.agent, model=args.model, base_url=args.base_url, init=args.init, cache_dir=args.llm_cache
    )


def run(args) -> int:
    from automodel.intake import load_dataset
    from automodel.intake.layouts import check_folder
    from automodel.sandbox.probe import choose_level
    from automodel.session import drive_command, start_run

    check_folder(args.dataset)  # a missing dataset is a DatasetError (exit 3), as in inspect, run and resume
    if args.workspace.exists() and not args.workspace.is_dir():
        raise UsageError(f"--workspace {args.workspace} is a file. Give a folder (it is created if missing).")
    if args.min_delta < 0 or args.min_z < 0 or args.max_repairs < 0:
        raise UsageError("--min-delta, --min-z and --max-repairs cannot be negative.")
    cfg = FitConfig(
        iters=args.iters,
        time_per_iter=args.time_per_iter,
        time_budget=args.time_budget,
        min_delta=args.min_delta,
        min_z=args.min_z,
        max_repairs=args.max_repairs,
        seed=args.seed,
        device=resolve_device(args.device),
        search=args.search,
        final_share=args.final_share,
        candidates=args.candidates,
        parallel=args.parallel,
        executor=args.executor,
        ray_address=args.ray_address,
    )
    if cfg.ray_address and cfg.executor != "ray":
        raise UsageError("--ray-address names a Ray cluster: add --executor ray to run there.")
    if cfg.executor == "ray":
        from automodel.remote.ray_executor import import_ray

        import_ray()  # not installed: say how to install it before a run folder is made
    if cfg.parallel > 1 and cfg.search != "budget":
        raise UsageError("--parallel runs a round's candidates at once: it needs --search budget (the greedy search "
                         "runs one edit at a time).")
    choose_level()  # no sandbox that works: say so before a run folder is made
    progress = Progress(quiet=args.quiet)
    ds = load_dataset(args.dataset, describe=args.describe)
    split = ds.split(seed=cfg.seed)
    profile = ds.profile(split)
    findings = check_feasibility(profile, cfg, progress, force=args.force)
    if args.download_weights:
        download_backbone(profile, cfg.device, progress)
    run_dir = start_run(
        args.dataset,
        args.workspace,
        args.name or default_run_name(args.dataset),
        cfg,
        brain_config(args),
        args.describe,
        progress,
        loaded=(ds, split),
        findings=[f.to_json() for f in findings],
    )
    return drive_command(run_dir, cfg, brain_config(args), progress)


def budget_of(cfg: FitConfig):
    from automodel.intake.feasibility import Budget

    return Budget(cfg.time_per_iter, cfg.iters, cfg.time_budget, OVERHEAD_GUESS, MIN_TRAIN_SECONDS)


def check_feasibility(profile: dict, cfg: FitConfig, progress: Progress, force: bool) -> list:
    """Warn about every finding; refuse (an InfeasibleDataset/InfeasibleBudget) on a blocking one unless forced."""
    from automodel.intake.feasibility import assess, refusal

    findings = assess(profile, detect(cfg.device), budget_of(cfg))
    for f in findings:
        if force or not f.blocking:
            progress.warn(("forced past: " if f.blocking else "") + f.line())
    error = refusal(findings)
    if error is not None and not force:
        raise error
    return findings


def download_backbone(profile: dict, device: str, progress: Progress) -> None:
    """Fetch the weights the Architect would fine-tune for this data; WeightsError when offline."""
    from automodel.agents.expert.task import backbone_to_fetch
    from automodel.weights import fetch

    arch = backbone_to_fetch(profile, device)
    if arch is None:
        progress.note(
            "automodel: --download-weights: the images are small, so the Architect trains a CNN from scratch "
            "on this device; nothing to download."
        )
        return
    for item in fetch([arch]):
        progress.note(item.text())
