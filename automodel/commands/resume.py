"""`automodel resume RUN_DIR`: continue a killed or finished run to its --iters."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from automodel.agents.registry import BrainConfig
from automodel.commands.fit import positive_int
from automodel.errors import UsageError
from automodel.search.loop import FitConfig
from automodel.search.progress import Progress
from automodel.search.workspace import RunDir


def register(sub) -> None:
    p = sub.add_parser(
        "resume",
        help="continue a run that was stopped, or extend a finished one",
        description="Continue RUN_DIR to its number of iterations (or --iters), keeping every completed "
        "iteration unchanged. An iteration that was interrupted is run again from its start.",
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument("--iters", type=positive_int, help="new total number of iterations (default: the run's own)")
    p.add_argument("--dataset", type=Path, help="the dataset's new location if it moved (its files must be unchanged)")
    p.add_argument("--executor", choices=("local", "ray"),
                   help="where the rest of the run's pipelines run (default: where they ran; see fit --help)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="with --executor ray: the cluster to continue on, if it is not the one the run used")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from automodel.session import drive_command

    run_dir = RunDir.open(args.run_dir)
    if args.dataset is not None:
        from automodel.intake.layouts import check_folder

        check_folder(args.dataset)  # before the run folder is touched; exit 3 as in fit and inspect
    info = run_dir.info
    cfg = FitConfig(**{"search": "greedy", **info["config"]})  # runs made before the budget search were greedy
    if args.iters:
        cfg = dataclasses.replace(cfg, iters=args.iters)  # saved by drive() once the dataset checks out
    if args.executor:  # the plan does not depend on it, so candidates stay comparable
        cfg = dataclasses.replace(cfg, executor=args.executor, ray_address=None)
    if args.ray_address:
        if cfg.executor != "ray":
            raise UsageError(f"{run_dir.path} runs its pipelines on this machine (--executor {cfg.executor}); "
                             "add --executor ray to continue on a Ray cluster.")
        cfg = dataclasses.replace(cfg, ray_address=args.ray_address)
    if cfg.executor == "ray":
        from automodel.remote.ray_executor import import_ray

        import_ray()  # not installed here: say how to install it
    brain_cfg = BrainConfig(**info["brain"])
    progress = Progress(quiet=args.quiet)
    removed = run_dir.remove_incomplete()
    run_dir.repair_best()
    done = len(run_dir.iterations())
    progress.note(
        f"automodel: resuming {run_dir.path}: {done} of {cfg.iters} iterations done"
        + (f"; redoing interrupted iteration {removed[0]}" if removed else "")
    )
    return drive_command(run_dir, cfg, brain_cfg, progress, dataset_override=args.dataset)
