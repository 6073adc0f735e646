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
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from automodel.agents.base import MODULES, Pipeline
from automodel.errors import RunError

RUN_FILE = "run.json"
JOURNAL = "journal.jsonl"
BEST = "best"
BEST_FILES = ("data.py", "model.py", "train.py", "model.pt", "metrics.json", "summary.json")


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def iter_name(n: int) -> str:
    return f"iter_{n:03d}"


@dataclass
class RunDir:
    """A run's folder on disk; all reads and writes of it go through here."""

    path: Path

    # ---- creation and loading
    @classmethod
    def create(cls, workspace: Path, name: str, run_info: dict[str, Any]) -> "RunDir":
        if workspace.exists() and not workspace.is_dir():
            raise RunError(f"The workspace {workspace} is a file, not a folder. Pass --workspace with a folder path (it is created if missing).")
        path = workspace / name
        if path.exists() and any(path.iterdir()):
            raise RunError(f"A run named '{name}' already exists at {path}. Continue it with `automodel resume {path}`, or pick another --name.")
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        atomic_write_json(path / RUN_FILE, run_info)
        return run

    @classmethod
    def open(cls, path: Path) -> "RunDir":
        path = Path(path)
        if not path.is_dir():
            raise RunError(f"{path} is not a run directory (no such folder). Give the folder `automodel fit` created, e.g. workspace/<run>.")
        if not (path / RUN_FILE).is_file():
            raise RunError(f"{path} has no {RUN_FILE}, so it is not an automodel run directory (or it was created by an interrupted start; delete it and run `automodel fit` again).")
        return cls(path)

    @property
    def info(self) -> dict[str, Any]:
        return read_json(self.path / RUN_FILE)

    def update_info(self, **changes: Any) -> None:
        info = self.info
        info.update(changes)
        atomic_write_json(self.path / RUN_FILE, info)

    # ---- journal
    def journal(self) -> list[dict[str, Any]]:
        path = self.path / JOURNAL
        if not path.exists():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line from a kill: ignored, the iteration is redone
        return records

    def append(self, record: dict[str, Any]) -> None:
        path = self.path / JOURNAL
        self._drop_torn_tail(path)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    @staticmethod
    def _drop_torn_tail(path: Path) -> None:
        if not path.exists():
            return
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])

    def iterations(self) -> list[dict[str, Any]]:
        """Final records, one per completed iteration, in order."""
        return [r for r in self.journal() if r.get("final")]

    def attempts(self) -> list[dict[str, Any]]:
        return self.journal()

    def next_iteration(self) -> int:
        done = self.iterations()
        return (done[-1]["iteration"] + 1) if done else 1

    def best_record(self) -> dict[str, Any] | None:
        accepted = [r for r in self.iterations() if r.get("accepted")]
        return accepted[-1] if accepted else None

    # ---- iteration folders
    def iter_dir(self, n: int) -> Path:
        return self.path / iter_name(n)

    def fresh_iter_dir(self, n: int) -> Path:
        """An empty folder for iteration n (a leftover from a killed attempt is removed)."""
        d = self.iter_dir(n)
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def pipeline(self, n: int) -> Pipeline:
        d = self.iter_dir(n)
        return Pipeline(**{m: (d / f"{m}.py").read_text(encoding="utf-8") for m in MODULES})

    def remove_incomplete(self) -> list[int]:
        """Delete folders of iterations without a final record; return their numbers."""
        done = {r["iteration"] for r in self.iterations()}
        removed = []
        for d in sorted(self.path.glob("iter_[0-9][0-9][0-9]")):
            n = int(d.name[5:])
            if n not in done:
                shutil.rmtree(d)
                removed.append(n)
        return removed

    # ---- best/
    def promote(self, n: int) -> None:
        """Make best/ a copy of iteration n, swapping the folder in one rename."""
        src = self.iter_dir(n)
        tmp = self.path / ".best.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for name in BEST_FILES:
            if (src / name).exists():
                shutil.copy2(src / name, tmp / name)
        info = self.path / "data" / "info.json"  # what the model expects as input
        if info.exists():
            shutil.copy2(info, tmp / "info.json")
        (tmp / "ITERATION").write_text(f"{n}\n", encoding="utf-8")
        best = self.path / BEST
        old = self.path / ".best.old"
        if old.exists():
            shutil.rmtree(old)
        if best.exists():
            os.replace(best, old)
        os.replace(tmp, best)
        if old.exists():
            shutil.rmtree(old)

    def best_iteration_on_disk(self) -> int | None:
        marker = self.path / BEST / "ITERATION"
        return int(marker.read_text().strip()) if marker.exists() else None

    def repair_best(self) -> None:
        """Make best/ agree with the journal (after a kill between promote and append)."""
        best = self.best_record()
        if best is None:
            if (self.path / BEST).exists():
                shutil.rmtree(self.path / BEST)
        elif self.best_iteration_on_disk() != best["iteration"]:
            self.promote(best["iteration"])
        for leftover in (".best.tmp", ".best.old"):
            if (self.path / leftover).exists():
                shutil.rmtree(self.path / leftover)


def runs_in(workspace: Path) -> Iterator[Path]:
    for p in sorted(workspace.iterdir()):
        if (p / RUN_FILE).is_file():
            yield p


def default_run_name(dataset: Path) -> str:
    return f"{dataset.resolve().name or 'dataset'}-{time.strftime('%Y%m%d-%H%M%S')}"
