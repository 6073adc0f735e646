"""Shared pieces of the benchmark scripts: machine details, running the CLI,
reading runs back, statistics and the results writer.

The benchmarks drive `automodel` as a user would, through subprocesses
(`python -m automodel.cli ...` with this interpreter), and read results only
from the CLI's --json outputs and the documented run-directory files.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
RUNS_DIR = REPO / "benchmarks" / "runs"
MATERIALIZE = REPO.parent / "shared" / "tools" / "materialize.py"


def materialize_shared(dataset: str, out: Path, *extra: str) -> Path:
    """Write a shared dataset as an imagefolder at `out` with ../shared/tools/materialize.py
    (`extra`: more of its options, e.g. "--per-class", "20"); kept when `out/train` exists."""
    if not MATERIALIZE.is_file():
        sys.exit(f"{MATERIALIZE} not found: this benchmark needs ../shared beside the checkout")
    if not (out / "train").is_dir():
        subprocess.run([sys.executable, str(MATERIALIZE), "--dataset", dataset, "--layout", "imagefolder",
                        "--out", str(out), *extra], check=True, capture_output=True)
    return out


# ------------------------------------------------------------ machine details


def machine_details() -> dict[str, Any]:
    """Where a benchmark ran: enough to tell two result files apart."""
    details: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gb": _ram_gb(),
        "python": platform.python_version(),
        "git_commit": git_commit(),
    }
    for module in ("torch", "torchvision", "automodel"):
        details[module] = _version(module)
    details["gpu"] = _gpu()
    return details


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # not installed under that distribution name
        return None


def _gpu() -> str | None:
    """The GPU's name via nvidia-smi (importing torch here would cost seconds for nothing)."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip().replace("\n", "; ") or None


def git_commit() -> str:
    """HEAD of the repository, marked '+changes' when the working tree differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=20
        )
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=20,
        )
        return head.stdout.strip() + (" +changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (git not available)"


def machine_markdown(details: dict[str, Any]) -> str:
    rows = [
        ("date", details.get("date_utc")),
        ("commit", details.get("git_commit")),
        ("platform", details.get("platform")),
        ("CPU", f"{details.get('cpu')} ({details.get('usable_cores')} usable of {details.get('cores')} cores)"),
        ("RAM", f"{details.get('ram_gb')} GB"),
        ("GPU", details.get("gpu") or "none"),
        ("python", details.get("python")),
        ("torch", details.get("torch")),
        ("torchvision", details.get("torchvision")),
        ("automodel", details.get("automodel")),
    ]
    return "\n".join(["| machine | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])


# ------------------------------------------------------------------ the CLI


@dataclass
class CliResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def error_tail(self, lines: int = 6) -> str:
        text = (self.stderr or self.stdout).strip().splitlines()
        return " | ".join(text[-lines:]) if text else f"exit code {self.returncode}"

    def json(self) -> Any:
        """The JSON a --json command printed (the last JSON document on stdout)."""
        text = self.stdout.strip()
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            # Progress lines may precede the document; take it from its first line.
            for i, line in enumerate(text.splitlines()):
                if line.startswith(("{", "[")):
                    try:
                        return json.loads("\n".join(text.splitlines()[i:]))
                    except json.JSONDecodeError:
                        continue
        raise ValueError(f"automodel {' '.join(self.args[:2])} printed no JSON: {text[-300:]!r}")


def run_cli(
    args: Sequence[str], *, log: Path | None = None, timeout: float | None = None, env: dict[str, str] | None = None
) -> CliResult:
    """Run `automodel ARGS` with this interpreter; `log` keeps a copy of its output."""
    cmd = [sys.executable, "-m", "automodel.cli", *[str(a) for a in args]]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})}
        )
        result = CliResult(list(map(str, args)), proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        result = CliResult(list(map(str, args)), 124, out, f"timed out after {timeout} s", time.monotonic() - t0)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"$ automodel {' '.join(result.args)}\n# exit {result.returncode} after {result.seconds:.1f} s\n")
            fh.write(result.stdout + ("\n" if result.stdout and not result.stdout.endswith("\n") else ""))
            fh.write(result.stderr + "\n")
    return result


# --------------------------------------------------------------- run folders


@dataclass
class TrialRun:
    """One `automodel fit` run driven to completion (or as far as it got)."""

    run_dir: Path
    show: dict[str, Any] | None  # `automodel show RUN_DIR --json`
    error: str | None  # why the run is missing or incomplete
    wall_seconds: float  # wall-clock spent in fit/resume by this invocation

    @property
    def iterations(self) -> list[dict[str, Any]]:
        return list((self.show or {}).get("iterations") or [])

    def first_test(self) -> float | None:
        first = next((r for r in self.iterations if r.get("iteration") == 1), None)
        return None if first is None else first.get("test_accuracy")

    def final_test(self) -> float | None:
        best = (self.show or {}).get("best") or {}
        return best.get("test_accuracy")

    def seconds(self) -> float:
        return float(sum(r.get("seconds") or 0.0 for r in self.iterations))

    def tokens(self) -> int:
        show = self.show or {}
        if show.get("tokens") is not None:
            return int(show["tokens"])
        return int(sum(r.get("tokens") or 0 for r in self.iterations))

    def cost(self) -> float | None:
        return (self.show or {}).get("cost_usd")


def read_show(run_dir: Path, log: Path | None = None) -> tuple[dict[str, Any] | None, str | None]:
    res = run_cli(["show", run_dir, "--json"], log=log)
    if not res.ok:
        return None, res.error_tail()
    try:
        return res.json(), None
    except ValueError as err:
        return None, str(err)


def ensure_run(
    dataset: Path,
    workspace: Path,
    name: str,
    iters: int,
    fit_args: Sequence[str],
    *,
    log: Path | None = None,
    timeout: float | None = None,
) -> TrialRun:
    """Bring workspace/name to `iters` iterations: reuse it when finished, `resume` it when not, `fit` it when absent.

    A folder without run.json never started (the fit died before writing it)
    and is started again from scratch.
    """
    run_dir = workspace / name
    wall = 0.0
    if run_dir.exists() and not (run_dir / "run.json").exists():
        shutil.rmtree(run_dir)
    if (run_dir / "run.json").exists():
        show, err = read_show(run_dir, log)
        done = len((show or {}).get("iterations") or [])
        if show is not None and done >= iters:
            return TrialRun(run_dir, show, None, 0.0)
        res = run_cli(["resume", run_dir, "--iters", iters, "-q"], log=log, timeout=timeout)
    else:
        res = run_cli(
            ["fit", dataset, "--iters", iters, "--workspace", workspace, "--name", name, "-q", *fit_args],
            log=log,
            timeout=timeout,
        )
    wall += res.seconds
    show, err = read_show(run_dir, log) if (run_dir / "run.json").exists() else (None, None)
    error = None if res.ok else f"automodel {res.args[0]} failed: {res.error_tail()}"
    if error is None and show is not None and len(show.get("iterations") or []) < iters:
        error = f"stopped after {len(show['iterations'])} of {iters} iterations; rerun to resume"
    if show is None and error is None:
        error = err or "no run directory was written"
    return TrialRun(run_dir, show, error, wall)


def iteration_timings(run_dir: Path) -> list[dict[str, float]]:
    """The `timings` of every iteration's metrics.json (sandbox start, imports, ..., training, total)."""
    out = []
    for path in sorted(run_dir.glob("iter_*/metrics.json")):
        try:
            timings = json.loads(path.read_text()).get("timings") or {}
        except (OSError, json.JSONDecodeError):
            continue
        if timings.get("total") is not None:
            out.append({k: float(v) for k, v in timings.items() if isinstance(v, (int, float))})
    return out


# ----------------------------------------------------------------- statistics


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and sample standard deviation of the values that exist, and how many there were."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None, None, 0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0), len(xs)


def pct_cell(values: Sequence[float | None], expected: int | None = None) -> str:
    """'85.2 ± 1.3' in percent over the trials that produced a number; notes missing trials."""
    mean, std, n = mean_std(values)
    if mean is None:
        return "-"
    cell = f"{100 * mean:.1f} ± {100 * std:.1f}"
    total = expected if expected is not None else len(values)
    return cell if n == total else f"{cell} (n={n}/{total})"


def paper_cell(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# ------------------------------------------------------------------- writing


def write_text(path: Path, text: str) -> None:
    """Write through a temporary file so a reader never sees half a result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def read_results(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A results .json written with write_json({"machine": ..., **result}): (result, machine details)."""
    saved = json.loads(path.read_text())
    return saved, saved.pop("machine")


def compare_and_report(args: Any, compare: Callable[[Any, Path, dict[str, Any]], dict[str, Any]],
                       report: Callable[[dict[str, Any], dict[str, Any]], str]) -> int:
    """The end of a side-by-side benchmark's main(): run `compare(args, out.json, machine)` (which adds its
    rows to the .json as they finish) or, with args.report_only, read the rows an earlier (perhaps stopped)
    run kept; then write the .md next to the .json from `report(result, machine)`."""
    out = Path(args.out)
    if args.report_only:
        result, details = read_results(out.with_suffix(".json"))
    else:
        details = {**machine_details(), "commit": git_commit()}
        result = compare(args, out.with_suffix(".json"), details)
    write_text(out.with_suffix(".md"), report(result, details))
    print(f"wrote {out.with_suffix('.md')}")
    return 0


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
