"""The run directory: run.json, the append-only journal, iteration folders, best/.

Crash safety: an iteration counts as done only once its final journal record
is appended (one write of one line, fsynced). Everything an iteration writes
before that lives in its own folder; `resume` deletes folders of iterations
that have no final record and rebuilds best/ from the journal, so killing the
process at any moment leaves a run that resumes to the same result.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from automodel.core import MODULES, JournalRecord, Pipeline
from automodel.errors import RunError
from automodel.files import atomic_write_json, read_json, remove_tree

RUN_FILE = "run.json"
JOURNAL = "journal.jsonl"
BEST = "best"
FINAL = "final"             # the budget search's final model (search/final.py)
FINAL_FILE = "FINAL.json"   # what final/ holds; written last, so its presence commits final/
PENDING_KEY = "pending_round"   # in run.json while a round's runs go on at once (search/pool.py)
PRODUCED = "produced.json"      # in an iteration folder: its outcome, kept until its record is committed
# What an iteration's training consumed, as shown to the Analyst, `show` and the report.
COMPUTE_KEYS = ("epochs", "images_per_second", "steps", "cpu_utilisation", "steal_share")
BEST_FILES = ("data.py", "model.py", "train.py", "model.pt", "metrics.json", "summary.json")


def iter_name(n: int) -> str:
    return f"iter_{n:03d}"


def compute_figures(metrics: Any) -> dict[str, Any]:
    """The COMPUTE_KEYS an iteration's metrics.json records (those it has), {} for anything else."""
    compute = metrics.get("compute") if isinstance(metrics, dict) else None
    if not isinstance(compute, dict):
        return {}
    return {k: compute[k] for k in COMPUTE_KEYS if compute.get(k) is not None}


@dataclass
class RunDir:
    """A run's folder on disk; all reads and writes of it go through here."""

    path: Path

    # ---- creation and loading
    @classmethod
    def create(cls, workspace: Path, name: str, run_info: dict[str, Any]) -> "RunDir":
        if workspace.exists() and not workspace.is_dir():
            raise RunError(
                f"The workspace {workspace} is a file, not a folder. Pass --workspace with a folder path (it is "
                "created if missing)."
            )
        path = workspace / name
        if path.exists() and any(path.iterdir()):
            raise RunError(
                f"A run named '{name}' already exists at {path}. Continue it with `automodel resume {path}`, or "
                "pick another --name."
            )
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        atomic_write_json(path / RUN_FILE, run_info)
        return run

    @classmethod
    def open(cls, path: Path) -> "RunDir":
        path = Path(path)
        if not path.is_dir():
            raise RunError(
                f"{path} is not a run directory (no such folder). Give the folder `automodel fit` created, e.g. "
                "workspace/<run>."
            )
        if not (path / RUN_FILE).is_file():
            raise RunError(
                f"{path} has no {RUN_FILE}, so it is not an automodel run directory (or it was created by an "
                "interrupted start; delete it and run `automodel fit` again)."
            )
        return cls(path)

    @property
    def info(self) -> dict[str, Any]:
        return read_json(self.path / RUN_FILE)

    def update_info(self, **changes: Any) -> None:
        info = self.info
        info.update(changes)
        atomic_write_json(self.path / RUN_FILE, info)

    def drop_info(self, key: str) -> None:
        """Remove `key` from run.json (nothing happens when it is not there)."""
        info = self.info
        if info.pop(key, None) is not None:
            atomic_write_json(self.path / RUN_FILE, info)

    # ---- journal
    def journal(self) -> list[JournalRecord]:
        """Every record, failed attempts that were repaired included, in order."""
        path = self.path / JOURNAL
        if not path.exists():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                break  # a torn last line from a kill: ignored, the iteration is redone
            try:
                records.append(JournalRecord.from_json(data))
            except TypeError:
                raise RunError(
                    f"{path} holds a record this version of automodel cannot read ({line[:120]}…): the run was "
                    "made by an incompatible version. Start a new run with `automodel fit`."
                ) from None
        return records

    def append(self, record: JournalRecord) -> None:
        path = self.path / JOURNAL
        self._drop_torn_tail(path)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record.to_json(), default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    @staticmethod
    def _drop_torn_tail(path: Path) -> None:
        if not path.exists():
            return
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])

    def iterations(self) -> list[JournalRecord]:
        """Final records, one per completed iteration, in order."""
        return [r for r in self.journal() if r.final]

    def next_iteration(self) -> int:
        done = self.iterations()
        return (done[-1].iteration + 1) if done else 1

    def best_record(self) -> JournalRecord | None:
        accepted = [r for r in self.iterations() if r.accepted]
        return accepted[-1] if accepted else None

    # ---- iteration folders
    def iter_dir(self, n: int) -> Path:
        return self.path / iter_name(n)

    def fresh_iter_dir(self, n: int) -> Path:
        """An empty folder for iteration n (a leftover from a killed attempt is removed)."""
        d = self.iter_dir(n)
        remove_tree(d)  # whatever a killed child left there, however deep
        d.mkdir(parents=True)
        return d

    def compute(self, n: int) -> dict[str, Any]:
        """What iteration n's training consumed (metrics.json "compute": epochs, images/s, CPU use), {} if unknown."""
        path = self.iter_dir(n) / "metrics.json"
        try:
            return compute_figures(read_json(path)) if path.is_file() else {}
        except (OSError, ValueError):
            return {}

    def pipeline(self, n: int) -> Pipeline:
        d = self.iter_dir(n)
        return Pipeline(**{m: (d / f"{m}.py").read_text(encoding="utf-8") for m in MODULES})

    def remove_incomplete(self) -> list[int]:
        """Delete folders of iterations without a final record; return their numbers. A run of a round that
        ran at once and had finished (its produced.json) is kept: the resumed round commits it."""
        done = {r.iteration for r in self.iterations()}
        pending = {int(job["iteration"]) for job in self.info.get(PENDING_KEY) or []}
        removed = []
        for d in sorted(self.path.glob("iter_[0-9][0-9][0-9]")):
            n = int(d.name[5:])
            if n in pending and (d / PRODUCED).is_file():
                continue
            if n not in done:
                remove_tree(d)
                removed.append(n)
        return removed

    # ---- best/
    def promote(self, n: int) -> None:
        """Make best/ a copy of iteration n, swapping the folder in one rename."""
        src = self.iter_dir(n)
        tmp = self.path / ".best.tmp"
        if tmp.exists():
            remove_tree(tmp)
        tmp.mkdir()
        for name in BEST_FILES:
            if (src / name).is_file() and not (src / name).is_symlink():
                shutil.copy2(src / name, tmp / name)
        info = self.path / "data" / "info.json"  # what the model expects as input
        if info.exists():
            shutil.copy2(info, tmp / "info.json")
        (tmp / "ITERATION").write_text(f"{n}\n", encoding="utf-8")
        best = self.path / BEST
        old = self.path / ".best.old"
        if old.exists():
            remove_tree(old)
        if best.exists():
            os.replace(best, old)
        os.replace(tmp, best)
        if old.exists():
            remove_tree(old)

    def best_iteration_on_disk(self) -> int | None:
        marker = self.path / BEST / "ITERATION"
        return int(marker.read_text().strip()) if marker.exists() else None

    def repair_best(self) -> None:
        """Make best/ agree with the journal (after a kill between promote and append)."""
        best = self.best_record()
        if best is None:
            if (self.path / BEST).exists():
                remove_tree(self.path / BEST)
        elif self.best_iteration_on_disk() != best.iteration:
            self.promote(best.iteration)
        for leftover in (".best.tmp", ".best.old"):
            if (self.path / leftover).exists():
                remove_tree(self.path / leftover)


def read_final(run_path: Path) -> dict[str, Any] | None:
    """final/FINAL.json of a run (kind, test_accuracy, members, ...), None when the run has no final model."""
    path = Path(run_path) / FINAL / FINAL_FILE
    try:
        spec = read_json(path) if path.is_file() else None
    except (OSError, ValueError):
        return None
    return spec if isinstance(spec, dict) and spec.get("members") else None


def runs_in(workspace: Path) -> Iterator[Path]:
    for p in sorted(workspace.iterdir()):
        if (p / RUN_FILE).is_file():
            yield p


def default_run_name(dataset: Path) -> str:
    return f"{dataset.resolve().name or 'dataset'}-{time.strftime('%Y%m%d-%H%M%S')}"


def reopen(run: RunDir, dataset_override: Path | None = None):
    """Load the run's dataset and split again, refusing a dataset that changed."""
    from automodel.intake import Split, load_dataset

    info = run.info
    path = Path(dataset_override or info["dataset"]["path"])
    ds = load_dataset(path, describe=info["dataset"].get("description") or None)
    if ds.fingerprint != info["dataset"]["fingerprint"]:
        raise RunError(
            f"The dataset at {path} is not the one this run was trained on (its files changed since "
            f"{info['created']}): resuming would mix two datasets. Start a new run with `automodel fit {path}`, "
            f"or restore the original files."
        )
    return ds, Split.from_json(info["split"], ds)
