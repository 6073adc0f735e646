"""Everything `fit` and `resume` share: start or reopen a run, then drive the loop.

A run stores its resolved configuration in run.json, so `resume` rebuilds the
same session (same split, same data, same brain settings) from the folder.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
import time
from pathlib import Path
from typing import Any

from automodel import __version__
from automodel.agents.registry import BrainConfig, describe, make_brain
from automodel.core import Brief
from automodel.errors import AutomodelError
from automodel.executors import make_runner
from automodel.hardware import bf16_speedup, detect
from automodel.outputs import report, tb
from automodel.sandbox.probe import choose_level, warn_if_weak
from automodel.search.acceptance import noise_note
from automodel.search.final import REFIT_DATA
from automodel.search.loop import FitConfig, Loop, summarize_run
from automodel.search.plan import config_plan
from automodel.search.progress import Progress
from automodel.search.tree import final_line
from automodel.search.workspace import RunDir, reopen
from automodel.weights import find_cached, named_in

DATA_DIR = "data"


def versions() -> dict[str, str]:
    import numpy
    import torch

    return {
        "automodel": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


def start_run(
    dataset_path: Path,
    workspace: Path,
    name: str,
    cfg: FitConfig,
    brain_cfg: BrainConfig,
    describe_text: str | None,
    progress: Progress,
    *,
    loaded: tuple[Any, Any] | None = None,
    findings: list[dict[str, Any]] | None = None,
) -> RunDir:
    """Create the run folder; `loaded` is the (Dataset, Split) the caller already read, `findings` the
    feasibility findings it chose to start despite (recorded in run.json)."""
    from automodel.intake import load_dataset

    if loaded is None:
        ds = load_dataset(dataset_path, describe=describe_text)
        split = ds.split(seed=cfg.seed)
    else:
        ds, split = loaded
    run_info = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": dataclasses.asdict(cfg),
        "brain": dataclasses.asdict(brain_cfg),
        "seed": cfg.seed,
        "dataset": {
            "path": str(Path(dataset_path).resolve()),
            "fingerprint": ds.fingerprint,
            "layout": ds.layout,
            "classes": ds.classes,
            "description": ds.description,
            "profile": ds.profile(split),
        },
        "split": split.to_json(),
        "feasibility": list(findings or []),
        "versions": versions(),
        "command": sys.argv,
    }
    run = RunDir.create(workspace, name, run_info)
    progress.note(f"automodel: run {run.path}")
    for problem in run_info["dataset"]["profile"]["problems"]:
        progress.warn(problem)
    return run


def drive(
    run: RunDir, cfg: FitConfig, brain_cfg: BrainConfig, progress: Progress, dataset_override: Path | None = None
) -> dict[str, Any]:
    """Prepare data and brain for `run`, then run the loop to cfg.iters."""
    from automodel.sandbox.bundle import prepare_data
    from automodel.sandbox.iteration import RunConfig

    started = time.monotonic()

    ds, split = reopen(run, dataset_override)
    if run.info["config"] != dataclasses.asdict(cfg):
        run.update_info(config=dataclasses.asdict(cfg))  # e.g. resume --iters N
    hardware = detect(cfg.device)
    level = choose_level()  # a tiny real child: stops here, before iteration 1, when no level works
    warn_if_weak(level)
    images = ds.decode()
    bundle = prepare_data(ds, split, images, run.path / DATA_DIR, device=cfg.device)
    info = dict(bundle.info)
    weights = find_cached()
    run_config = RunConfig(device=cfg.device, seed=cfg.seed, sandbox=level, threads=hardware.cpu_cores,
                           cache_dir=weights.hub_dir, pretrained_available=bool(weights.names))
    refit_bundle = []  # staged on first use: train+val as the training split, for the final refit

    def bundle_for(refit: bool):
        if refit and not refit_bundle:
            both = dataclasses.replace(split, train=[*split.train, *split.val])
            refit_bundle.append(prepare_data(ds, both, images, run.path / REFIT_DATA, device=cfg.device))
        return refit_bundle[0] if refit else bundle

    runner = make_runner(cfg, hardware, run_config, bundle_for, progress)
    slots = runner.slots
    # With --parallel the Architect sizes a network for one slot, from a probe run in one slot.
    one = slots[0] if slots else None
    first_seconds, final_seconds, one_shot = run_seconds(cfg, has_test=bool(split.test))
    brief = Brief(
        profile=run.info["dataset"]["profile"],
        # A one-shot run trains on train+val: size its network for the images it will see.
        info={**info, "num_train": len(split.train) + len(split.val)} if one_shot else info,
        description=ds.description,
        hardware=dataclasses.replace(hardware, cpu_cores=one.threads) if one else hardware,
        time_per_iter=first_seconds,
        final_seconds=final_seconds,
        pretrained_cache=list(weights.names),
        throughput=_throughput(run, bundle, dataclasses.replace(run_config, threads=one.threads) if one
                               else run_config, level, max(images.image_size), progress),
    )
    if slots:
        progress.note(f"automodel: --parallel {cfg.parallel}: candidates run {cfg.parallel} at once, each in a "
                      f"slot of {one.threads} thread(s)" + (f" and {one.memory / 2**30:.1f} GiB" if one.memory else "")
                      + "; the final refit gets the whole machine")
    brain = make_brain(brain_cfg)
    brain.start(brief)
    progress.note(
        f"automodel: brain: {describe(brain)}; device: {cfg.device}; sandbox: {level}; "
        f"data: {len(split.train)} train / {len(split.val)} val / {len(split.test)} test images, "
        f"{len(ds.classes)} classes at {images.image_size[0]}x{images.image_size[1]}"
    )
    if weights.names:
        progress.note(f"automodel: pretrained weights in {weights.hub_dir}: {', '.join(weights.names)}")
    facts = {
        "num_classes": len(ds.classes),
        "num_train": len(split.train),
        "image_size": list(images.image_size),
        "channels": images.channels,
        "description": (ds.description or "")[:500],
    }

    loop = Loop(
        run,
        brain,
        runner.execute,
        cfg,
        brief,
        facts,
        progress,
        val_labels=bundle.val_y,
        on_iteration=lambda n: tb.update_after_iteration(run.path, n),
        test_labels=bundle.test_y,
        # A --time-budget is wall time from here; a budget estimated from --iters x --time-per-iter
        # counts iterations only, as the greedy search does.
        started=started if cfg.time_budget is not None else None,
        slots=slots,
    )
    try:
        outcome = loop.fit()
    finally:
        progress.close()
        runner.close()
    finish(run, progress)
    return outcome


def run_seconds(cfg: FitConfig, has_test: bool) -> tuple[float, float, bool]:
    """Training seconds of the first pipeline's run (the Architect sizes the network for it), of the final
    refit on train+val (0: none, as in the greedy search), and whether that first run is itself on train+val
    (a one-shot plan)."""
    if cfg.search != "budget":
        return cfg.time_per_iter, 0.0, False
    plan = config_plan(cfg, has_test)
    return plan.rungs[0], plan.final, plan.one_shot


def _throughput(run: RunDir, bundle, config, level: str, side: int, progress: Progress) -> dict | None:
    """The machine's measured training speed, once per run (kept in run.json so resume reuses it)."""
    if "throughput" in run.info:
        return run.info["throughput"]
    from automodel.sandbox.throughput import measure_throughput

    # Photos are trained from scratch at 64 px on a CPU: measure there, not at the decoded size.
    figures = measure_throughput(bundle, config, level, input_size=None if side <= 64 else 64)
    run.update_info(throughput=figures)
    if figures:
        rates = ", ".join(f"{float(v):,.0f} at WIDTH {k}" for k, v in figures["images_per_second"].items())
        speedup = bf16_speedup(figures)
        bf16 = f"; {speedup:.1f}x faster in bfloat16 autocast" if speedup else ""
        progress.note(f"automodel: this machine trains {rates} images/s ({figures['input_size']} px, batch "
                      f"{figures['batch_size']}, {figures['threads']} threads{bf16}; measured in "
                      f"{figures['seconds']} s)")
    else:
        progress.note("automodel: the throughput probe failed; the Architect sizes the first pipeline from its table")
    return figures


def drive_command(
    run: RunDir, cfg: FitConfig, brain_cfg: BrainConfig, progress: Progress, dataset_override: Path | None = None
) -> int:
    """`drive` for the fit and resume commands: a stop always says how to continue."""
    try:
        outcome = drive(run, cfg, brain_cfg, progress, dataset_override)
    except KeyboardInterrupt:
        print(f"\nStopped. Completed iterations are kept; continue with: automodel resume {run.path}", file=sys.stderr)
        return 130
    except AutomodelError:
        print(
            "Completed iterations are kept; after fixing the problem below, continue with: automodel resume "
            f"{run.path}",
            file=sys.stderr,
        )
        raise
    print(final_message(run, outcome))
    return 0


def finish(run: RunDir, progress: Progress) -> None:
    """End-of-run outputs: report and submission. A failure here never loses the run."""
    try:
        paths = report.write_outputs(run.path)
        for p in paths:
            progress.note(f"automodel: wrote {p}")
    except Exception as err:  # noqa: BLE001 - the run itself is complete and safe
        progress.note(
            f"automodel: warning: could not write the report ({type(err).__name__}: {err}); "
            f"try again with `automodel report {run.path}`."
        )


def final_message(run: RunDir, outcome: dict[str, Any]) -> str:
    best = outcome.get("best")
    lines = [f"Run finished: {run.path}"]
    if best:
        val = best["val_accuracy"]  # None for a one-shot run, which trained on the validation images
        lines.append(
            f"Best: iteration {best['iteration']} with validation accuracy "
            + (f"{val:.4f}" if val is not None else "- (trained on train+val)")
            + " and test accuracy "
            + (f"{best['test_accuracy']:.4f}." if best["test_accuracy"] is not None else "None.")
        )
        lines.append(f"Its pipeline and weights are in {run.path / 'best'}.")
        if backbone := backbone_line(run):
            lines.append(backbone)
    else:
        lines.append("No iteration trained successfully; see the iter_*/stderr.txt and metrics.json files.")
    if final := outcome.get("final"):
        lines.append(final_line(final) + ".")
        lines.append(f"The final model is in {run.path / 'final'}; predict, export and serve use it.")
    if outcome.get("failed_share") is not None:
        lines.append(f"Failed iterations: {outcome['failed_share']:.0%}.")
    if note := noise_note(outcome):
        lines.append(note)
    lines.append(f"Details: automodel show {run.path}")
    return "\n".join(lines)


def backbone_line(run: RunDir) -> str | None:
    """Which cached pretrained weights the best model.py starts from, if any (the sandbox read them)."""
    try:
        source = (run.path / "best" / "model.py").read_text(encoding="utf-8")
    except OSError:
        return None
    names = named_in(source, find_cached().names)
    if not names:
        return None
    return (f"Pretrained backbone: {', '.join(names)}, fine-tuned from the weights in your Hugging Face cache "
            f"(named in best/model.py).")


__all__ = ["start_run", "drive", "drive_command", "final_message", "summarize_run"]
