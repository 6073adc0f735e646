"""Run the published protocol on chosen datasets and put our numbers next to the paper's.

    python benchmarks/reproduce.py cifar10 svhn --agent llm --model gpt-4o --base-url https://api.openai.com/v1
    python benchmarks/reproduce.py digits --agent expert --iters 20 --time-per-iter 30
    python benchmarks/reproduce.py ./my_images --trials 1          # any image folder (no paper numbers)

Protocol (automodel/datasets.yaml, "protocol"): for each dataset, N trials
(default 3, seeds SEED..SEED+N-1) of `automodel fit --iters 20`, plus the
zero-shot baseline (`automodel zero-shot`, one plain LLM request, trained
once; with --agent expert, which writes no zero-shot script, the hand-written
first-try script benchmarks/naive_pipeline run once with `automodel run`)
and, with --ablation sequential, the same fit with `--init sequential`.
Reported per dataset, as mean ± std over the trials, in percent of test
accuracy: zero-shot, the first iteration, and the final model (the iteration
with the best validation accuracy), each beside the paper's figure, then the
Kaggle top accuracy and rank the paper gives, the total compute time (sum of
the iterations' seconds and the zero-shot runs') and the LLM tokens used.

Datasets are registry names (written once into --data-dir with `automodel
datasets fetch`; network sets need the download, see `automodel datasets show
NAME`, or --source NAME=PATH) or paths of image folders.

Resuming: every trial is a run directory
    RUNS/<dataset>/<brain>-t<time-per-iter>/{single,sequential}/trial_<k>/
and every zero-shot result a file .../zero_shot/trial_<k>.json. Rerunning the
same command reads finished trials back, continues unfinished ones with
`automodel resume`, and starts missing ones; --table-only only rebuilds the
table from what is there.

On a GPU machine: --device cuda, and larger budgets (--time-per-iter, and any
other `automodel fit` option through --fit-arg, e.g. --fit-arg=--time-budget=7200).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

try:
    from .common import (
        REPO,
        RESULTS_DIR,
        RUNS_DIR,
        TrialRun,
        duration,
        ensure_run,
        machine_details,
        machine_markdown,
        markdown_table,
        paper_cell,
        pct_cell,
        read_show,
        run_cli,
        write_json,
        write_text,
    )
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from common import (
        REPO,
        RESULTS_DIR,
        RUNS_DIR,
        TrialRun,
        duration,
        ensure_run,
        machine_details,
        machine_markdown,
        markdown_table,
        paper_cell,
        pct_cell,
        read_show,
        run_cli,
        write_json,
        write_text,
    )

from automodel.datasets.registry import DatasetEntry, Registry, load_registry
from automodel.errors import AutomodelError

DATA_DIR = RUNS_DIR / "data"  # under benchmarks/runs/, which git ignores
NAIVE_PIPELINE = REPO / "benchmarks" / "naive_pipeline"


@dataclass(frozen=True)
class Config:
    trials: int = 3                   # independent runs per dataset (seeds seed..seed+trials-1)
    iters: int = 20                   # iterations per run (the paper's 20)
    time_per_iter: float = 60.0       # training seconds per iteration
    agent: str = "expert"             # "expert" or "llm"
    model: str | None = None          # LLM model name (agent llm)
    base_url: str | None = None       # OpenAI-compatible server (agent llm)
    device: str = "auto"              # auto | cpu | cuda
    zero_shot: bool = True            # run the zero-shot baseline
    sequential: bool = False          # also run the sequential-init ablation
    seed: int = 0                     # seed of trial 0
    per_class: int | None = None      # write registry sets with at most N images per class per split
    fit_args: tuple[str, ...] = ()    # extra `automodel fit` options, passed as they are
    runs_dir: Path = RUNS_DIR
    data_dir: Path = DATA_DIR

    def brain_key(self) -> str:
        """Folder name of this brain + budget, so runs made with other settings are never resumed as these."""
        brain = "expert" if self.agent == "expert" else "llm-" + re.sub(r"[^\w.\-]+", "_", self.model or "default")
        return f"{brain}-t{self.time_per_iter:g}"

    def brain_args(self) -> list[str]:
        args = ["--agent", self.agent]
        if self.model:
            args += ["--model", self.model]
        if self.base_url:
            args += ["--base-url", self.base_url]
        return args


@dataclass
class ZeroShot:
    test_accuracy: float | None
    seconds: float
    tokens: int
    cost_usd: float | None
    error: str | None


@dataclass
class DatasetResult:
    label: str
    path: Path | None
    entry: DatasetEntry | None
    error: str | None = None
    single: list[TrialRun] = field(default_factory=list)
    sequential: list[TrialRun] = field(default_factory=list)
    zero_shot: list[ZeroShot] = field(default_factory=list)


# ------------------------------------------------------------------ datasets


def resolve_dataset(spec: str, reg: Registry, cfg: Config, sources: dict[str, str],
                    log: Path | None = None) -> DatasetResult:
    """A registry name (fetched into cfg.data_dir once) or an image folder."""
    as_path = Path(spec).expanduser()
    if as_path.is_dir():
        return DatasetResult(label=as_path.resolve().name, path=as_path.resolve(), entry=None)
    entry = reg.get(spec)  # UsageError naming the known datasets
    folder = cfg.data_dir / (entry.name + (f"-pc{cfg.per_class}" if cfg.per_class else ""))
    if folder.is_dir() and any(folder.iterdir()):
        return DatasetResult(label=entry.name, path=folder, entry=entry)
    args: list[Any] = ["datasets", "fetch", entry.name, folder]
    if cfg.per_class:
        args += ["--per-class", cfg.per_class]
    if entry.name in sources:
        args += ["--source", sources[entry.name]]
    res = run_cli(args, log=log)
    if not res.ok:
        return DatasetResult(label=entry.name, path=None, entry=entry, error=res.error_tail(3))
    return DatasetResult(label=entry.name, path=folder, entry=entry)


# -------------------------------------------------------------------- trials


def trial_dir(cfg: Config, label: str, variant: str) -> Path:
    return cfg.runs_dir / label / cfg.brain_key() / variant


def run_trial(ds: DatasetResult, cfg: Config, k: int, variant: str, *, table_only: bool, log: Path | None) -> TrialRun:
    workspace = trial_dir(cfg, ds.label, variant)
    name = f"trial_{k}"
    if table_only:
        run_dir = workspace / name
        if not (run_dir / "run.json").exists():
            return TrialRun(run_dir, None, "not run yet", 0.0)
        show, err = read_show(run_dir, log)
        done = len((show or {}).get("iterations") or [])
        missing = None if show is not None and done >= cfg.iters else (err or f"{done} of {cfg.iters} iterations done")
        return TrialRun(run_dir, show, missing, 0.0)
    args = [
        *cfg.brain_args(),
        "--time-per-iter",
        f"{cfg.time_per_iter:g}",
        "--seed",
        cfg.seed + k,
        "--device",
        cfg.device,
        "--search",  # the published protocol: one edit per iteration at full length
        "greedy",
    ]
    if variant == "sequential":
        args += ["--init", "sequential"]
    args += list(cfg.fit_args)
    return ensure_run(ds.path, workspace, name, cfg.iters, [str(a) for a in args], log=log)


def run_zero_shot(ds: DatasetResult, cfg: Config, k: int, *, table_only: bool, log: Path | None) -> ZeroShot:
    """One zero-shot trial; its JSON is kept so a rerun reads it back instead of paying again.

    With an LLM it is `automodel zero-shot` (one plain request, run once). The
    expert writes no zero-shot script, so with --agent expert the baseline is
    benchmarks/naive_pipeline, a typical first-try script, run once with `automodel run`.
    """
    folder = trial_dir(cfg, ds.label, "zero_shot")
    saved = folder / f"trial_{k}.json"
    if saved.exists():
        return parse_zero_shot(_load_json(saved))
    if table_only:
        return ZeroShot(None, 0.0, 0, None, "not run yet")
    run_dir = folder / f"trial_{k}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an interrupted attempt: its result was never saved, so it starts over
    common = ["--json", "--time-limit", f"{cfg.time_per_iter:g}", "--seed", cfg.seed + k, "--device", cfg.device]
    if cfg.agent == "expert":
        args = ["run", ds.path, "--pipeline", NAIVE_PIPELINE, "--out", run_dir, *common]
    else:
        brain = [a for a in cfg.brain_args() if a not in ("--agent", "llm")]
        args = ["zero-shot", ds.path, *brain, "--workspace", folder, "--name", f"trial_{k}", *common]
    res = run_cli(args, log=log)
    try:
        data = res.json()
    except ValueError as err:
        return ZeroShot(
            None, res.seconds, 0, None, f"automodel {args[0]} failed: {res.error_tail(3) if not res.ok else err}"
        )
    data.setdefault("seconds", (data.get("timings") or {}).get("total") or round(res.seconds, 2))
    write_json(saved, data)
    return parse_zero_shot(data)


def _load_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text(encoding="utf-8"))


def parse_zero_shot(data: dict[str, Any]) -> ZeroShot:
    """Read the figures from `zero-shot --json` (top level, or under result/metrics)."""

    def pick(key: str) -> Any:
        for where in (data, data.get("result") or {}, data.get("metrics") or {}):
            if isinstance(where, dict) and where.get(key) is not None:
                return where[key]
        return None

    status = pick("status")
    err = pick("error")
    if isinstance(err, dict):
        err = ": ".join(str(err[k]) for k in ("type", "message") if err.get(k))
    error = None if status in (None, "ok") else f"zero-shot pipeline {status}" + (f": {str(err)[:300]}" if err else "")
    return ZeroShot(
        test_accuracy=pick("test_accuracy"),
        seconds=float(pick("seconds") or 0.0),
        tokens=int(pick("tokens") or 0),
        cost_usd=pick("cost_usd"),
        error=error,
    )


# --------------------------------------------------------------------- table


def build_table(results: Sequence[DatasetResult], cfg: Config) -> str:
    """The paper's layout: zero-shot, first iteration, final; ours (mean ± std over trials) beside the paper's."""
    header = [
        "Dataset",
        "Zero-shot (ours)",
        "Zero-shot (paper)",
        "First iteration (ours)",
        "First iteration (paper)",
        f"Final, {cfg.iters} it. (ours)",
        "Final (paper)",
    ]
    if cfg.sequential:
        header.append("Final, sequential init (ours)")
    header += ["Kaggle top (paper)", "Kaggle rank (paper)", "Trials", "Compute time", "Tokens"]
    rows = []
    for ds in results:
        pub = ds.entry.published if ds.entry else None
        if ds.error:
            rows.append([ds.label, "unavailable", *[""] * (len(header) - 2)])
            continue
        zs = [z.test_accuracy for z in ds.zero_shot] if cfg.zero_shot else []
        done = [t for t in ds.single if t.error is None]
        row = [
            ds.label,
            pct_cell(zs, cfg.trials) if cfg.zero_shot else "not run",
            paper_cell(pub.zero_shot if pub else None),
            pct_cell([t.first_test() for t in ds.single], cfg.trials),
            paper_cell(pub.first_iteration if pub else None),
            pct_cell([t.final_test() if t.error is None else None for t in ds.single], cfg.trials),
            paper_cell(pub.final if pub else None),
        ]
        if cfg.sequential:
            row.append(pct_cell([t.final_test() if t.error is None else None for t in ds.sequential], cfg.trials))
        seconds = sum(t.seconds() for t in ds.single + ds.sequential) + sum(z.seconds for z in ds.zero_shot)
        tokens = sum(t.tokens() for t in ds.single + ds.sequential) + sum(z.tokens for z in ds.zero_shot)
        row += [
            paper_cell(pub.kaggle_top_accuracy if pub else None),
            (pub.kaggle_rank if pub and pub.kaggle_rank else "n/a"),
            f"{len(done)}/{cfg.trials}",
            duration(seconds),
            f"{tokens:,}",
        ]
        rows.append(row)
    return markdown_table(header, rows)


def problems(results: Sequence[DatasetResult]) -> list[str]:
    out = []
    for ds in results:
        if ds.error:
            out.append(f"{ds.label}: dataset unavailable: {ds.error}")
            continue
        for variant, trials in (("single", ds.single), ("sequential", ds.sequential)):
            for k, t in enumerate(trials):
                if t.error:
                    out.append(f"{ds.label} {variant} trial {k}: {t.error} ({t.run_dir})")
        for k, z in enumerate(ds.zero_shot):
            if z.error:
                out.append(f"{ds.label} zero-shot trial {k}: {z.error}")
    return out


def build_report(results: Sequence[DatasetResult], cfg: Config, reg: Registry, machine: dict[str, Any]) -> str:
    brain = (
        "built-in expert"
        if cfg.agent == "expert"
        else f"LLM {cfg.model or '(default model)'}" + (f" at {cfg.base_url}" if cfg.base_url else "")
    )
    lines = [
        "# Reproducing the published protocol",
        "",
        f"Brain: {brain}. {cfg.trials} trial(s) of {cfg.iters} iterations, {cfg.time_per_iter:g} s of training per "
        "iteration, "
        f"device {cfg.device}, seeds {cfg.seed}..{cfg.seed + cfg.trials - 1}"
        + (f", at most {cfg.per_class} images per class per split" if cfg.per_class else "")
        + ".",
        "Test accuracy in percent, mean ± std over trials (n shows trials that produced a number). "
        "First iteration: the Project Architect's pipeline; final: the iteration with the best validation accuracy."
        + (
            " Zero-shot with the expert brain: benchmarks/naive_pipeline (a typical first-try script, no LLM)."
            if cfg.zero_shot and cfg.agent == "expert"
            else ""
        ),
        "",
        build_table(results, cfg),
        "",
    ]
    note = " ".join(str(reg.paper.get("numbers_note", "")).split())
    if note and any(ds.entry and ds.entry.published.final is None for ds in results):
        lines += [f"Paper figures marked n/a: {note}", ""]
    issues = problems(results)
    if issues:
        lines += ["Incomplete:", ""] + [f"- {p}" for p in issues] + ["", "Rerun the same command to resume.", ""]
    lines += ["## Trials", "", trial_table(results), "", "## Machine", "", machine_markdown(machine), ""]
    return "\n".join(lines)


def trial_table(results: Sequence[DatasetResult]) -> str:
    rows = []
    for ds in results:
        for variant, trials in (("single", ds.single), ("sequential", ds.sequential)):
            for k, t in enumerate(trials):
                failed = sum(1 for r in t.iterations if r.get("status") != "ok")
                rows.append(
                    [
                        ds.label,
                        variant,
                        k,
                        paper_cell(t.first_test()),
                        paper_cell(t.final_test()),
                        f"{len(t.iterations)}",
                        f"{failed}",
                        duration(t.seconds()),
                        f"{t.tokens():,}",
                        t.run_dir.relative_to(REPO) if t.run_dir.is_relative_to(REPO) else t.run_dir,
                    ]
                )
        for k, z in enumerate(ds.zero_shot):
            rows.append(
                [
                    ds.label,
                    "zero-shot",
                    k,
                    "",
                    paper_cell(z.test_accuracy),
                    "",
                    "",
                    duration(z.seconds),
                    f"{z.tokens:,}",
                    "",
                ]
            )
    return markdown_table(
        ["dataset", "variant", "trial", "first %", "final %", "iterations", "failed", "time", "tokens", "run"], rows
    )


def results_json(results: Sequence[DatasetResult], cfg: Config, machine: dict[str, Any]) -> dict[str, Any]:
    def trial(t: TrialRun) -> dict[str, Any]:
        return {
            "run_dir": str(t.run_dir),
            "first_test": t.first_test(),
            "final_test": t.final_test(),
            "iterations": len(t.iterations),
            "seconds": t.seconds(),
            "tokens": t.tokens(),
            "cost_usd": t.cost(),
            "error": t.error,
        }

    return {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items()},
        "machine": machine,
        "datasets": [
            {
                "dataset": ds.label,
                "path": str(ds.path) if ds.path else None,
                "error": ds.error,
                "published": ds.entry.published.__dict__ if ds.entry else None,
                "single": [trial(t) for t in ds.single],
                "sequential": [trial(t) for t in ds.sequential],
                "zero_shot": [z.__dict__ for z in ds.zero_shot],
            }
            for ds in results
        ],
    }


# ---------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Config]:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring for the protocol and the run layout.",
    )
    p.add_argument("datasets", nargs="+", help="registry names (automodel datasets list) or image folders")
    p.add_argument("--trials", type=int, default=Config.trials, help="trials per dataset (default %(default)s)")
    p.add_argument(
        "--iters", type=int, default=Config.iters, help="iterations per trial (default %(default)s, as published)"
    )
    p.add_argument(
        "--time-per-iter",
        type=float,
        default=Config.time_per_iter,
        help="training seconds per iteration (default %(default)s)",
    )
    p.add_argument("--agent", choices=("expert", "llm"), default=Config.agent, help="the brain (default %(default)s)")
    p.add_argument("--model", help="LLM model name (with --agent llm)")
    p.add_argument("--base-url", help="OpenAI-compatible server (with --agent llm)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=Config.device)
    p.add_argument("--no-zero-shot", action="store_true", help="skip the zero-shot baseline")
    p.add_argument(
        "--ablation",
        choices=("sequential",),
        action="append",
        default=[],
        help="also run this ablation (sequential init)",
    )
    p.add_argument("--seed", type=int, default=Config.seed, help="seed of the first trial (default %(default)s)")
    p.add_argument("--per-class", type=int, help="write registry datasets with at most N images per class per split")
    p.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="downloaded copy of a network dataset (repeatable)",
    )
    p.add_argument(
        "--fit-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra option for `automodel fit` (repeatable), e.g. --fit-arg=--time-budget=7200",
    )
    p.add_argument("--runs-dir", type=Path, default=RUNS_DIR, help="where trial runs live (default benchmarks/runs)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=DATA_DIR,
        help="where registry datasets are written (default benchmarks/runs/data)",
    )
    p.add_argument(
        "--out", type=Path, default=RESULTS_DIR / "reproduce.md", help="Markdown results (a .json is written beside it)"
    )
    p.add_argument(
        "--table-only", action="store_true", help="run nothing: rebuild the table from the runs already there"
    )
    args = p.parse_args(argv)
    if args.trials < 1 or args.iters < 1:
        p.error("--trials and --iters must be at least 1")
    if args.agent == "expert" and (args.model or args.base_url):
        p.error("--model and --base-url need --agent llm")
    for item in args.source:
        if "=" not in item:
            p.error(f"--source takes NAME=PATH (e.g. --source cassava=~/Downloads/cassava.zip), not {item!r}")
    cfg = Config(
        trials=args.trials,
        iters=args.iters,
        time_per_iter=args.time_per_iter,
        agent=args.agent,
        model=args.model,
        base_url=args.base_url,
        device=args.device,
        zero_shot=not args.no_zero_shot,
        sequential="sequential" in args.ablation,
        seed=args.seed,
        per_class=args.per_class,
        fit_args=tuple(args.fit_arg),
        runs_dir=args.runs_dir.resolve(),
        data_dir=args.data_dir.resolve(),
    )
    return args, cfg


def main(argv: Sequence[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    # Absolute: the CLI runs from the repository root, not from where this was started.
    sources = {
        name: str(Path(path).expanduser().resolve())
        for name, path in (s.split("=", 1) for s in args.source if "=" in s)
    }
    try:
        reg = load_registry()
        machine = machine_details()
        log = cfg.runs_dir / "reproduce.log"
        results: list[DatasetResult] = []
        for spec in args.datasets:
            ds = (
                resolve_dataset(spec, reg, cfg, sources, log) if not args.table_only else _table_only_dataset(spec, reg)
            )
            results.append(ds)
            if ds.error:
                _say(f"{ds.label}: unavailable: {ds.error}")
                continue
            for k in range(cfg.trials):
                if cfg.zero_shot:
                    ds.zero_shot.append(run_zero_shot(ds, cfg, k, table_only=args.table_only, log=log))
                _say(f"{ds.label}: trial {k + 1}/{cfg.trials} ({cfg.iters} iterations)")
                ds.single.append(run_trial(ds, cfg, k, "single", table_only=args.table_only, log=log))
                if cfg.sequential:
                    ds.sequential.append(run_trial(ds, cfg, k, "sequential", table_only=args.table_only, log=log))
                # Written after every trial so an interrupted benchmark still leaves its numbers.
                _write(results, cfg, reg, machine, args.out)
        _write(results, cfg, reg, machine, args.out)
    except AutomodelError as err:
        print(f"reproduce: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        # The runs keep every finished iteration; the same command picks them up.
        print(
            f"\nreproduce: interrupted; rerun the same command to resume (partial table: {args.out})", file=sys.stderr
        )
        return 130
    print(args.out.read_text(encoding="utf-8").split("## Trials")[0].rstrip())
    print(f"\nwritten: {args.out} and {args.out.with_suffix('.json')}")
    return 1 if problems(results) else 0


def _table_only_dataset(spec: str, reg: Registry) -> DatasetResult:
    as_path = Path(spec).expanduser()
    if as_path.is_dir():
        return DatasetResult(label=as_path.resolve().name, path=as_path.resolve(), entry=None)
    entry = reg.get(spec)
    return DatasetResult(label=entry.name, path=None, entry=entry)


def _write(results: Sequence[DatasetResult], cfg: Config, reg: Registry, machine: dict[str, Any], out: Path) -> None:
    write_text(out, build_report(results, cfg, reg, machine))
    write_json(out.with_suffix(".json"), results_json(results, cfg, machine))


def _say(text: str) -> None:
    print(f"reproduce: {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
