"""What a finished run offers to report, predict and export: its best model, the
DataInfo the model was built with, and (from the dataset) the held-out labels.

The run directory never stores validation or test labels (the sandbox could
read them), so they are taken from the dataset again through the split
recorded in run.json, exactly as `resume` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from automodel.core import JournalRecord
from automodel.errors import AutomodelError, RunError
from automodel.files import read_json
from automodel.search.workspace import BEST, FINAL, RunDir, read_final

DATA_DIR = "data"
PIPELINE_FILES = ("data.py", "model.py", "train.py")


@dataclass(frozen=True)
class BestModel:
    """The model a run gives: its final model (final/, from the budget search) when it has one, else its
    best iteration (best/); its folder, weights and the facts it was built with."""

    run: Path
    iteration: int
    dir: Path                    # data.py model.py train.py model.pt (the first member of an ensemble)
    record: JournalRecord        # its final journal record (a refit's when the final model was refit)
    info: dict[str, Any]         # DataInfo (num_classes, class_names, channels, image_size, mean, std, ...)
    kind: str = "iteration"      # iteration | refit | ensemble
    test_accuracy: float | None = None
    # An ensemble's members (each a BestModel of one pipeline) and their weights; () for one model.
    members: tuple["BestModel", ...] = ()
    member_weights: tuple[int, ...] = ()

    def parts(self) -> list[tuple["BestModel", int]]:
        """(model, weight) for each pipeline whose softmax outputs are averaged: one unless an ensemble."""
        return list(zip(self.members, self.member_weights)) if self.members else [(self, 1)]

    @property
    def classes(self) -> list[str]:
        return list(self.info["class_names"])

    @property
    def weights(self) -> Path:
        return self.dir / "model.pt"

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.info["image_size"]
        return int(h), int(w)

    @property
    def channels(self) -> int:
        return int(self.info["channels"])


def load_best(run_path: Path) -> BestModel:
    """The model of the run at `run_path` (its final model, else its best iteration); RunError with the fix
    when there is none."""
    run = RunDir.open(Path(run_path).resolve())
    final = load_final(run)
    if final is not None:
        return final
    record = run.best_record()
    if record is None:
        done = len(run.iterations())
        raise RunError(
            f"{run.path} has no finished iteration with a trained model yet ({done} iteration(s) recorded, none "
            f"succeeded). Continue the run with `automodel resume {run.path}` (or start one with `automodel fit`), "
            f"then try again.")
    best = run.path / BEST
    on_disk = run.best_iteration_on_disk()
    missing = [name for name in (*PIPELINE_FILES, "model.pt") if not (best / name).is_file()]
    if on_disk != record.iteration or missing:
        raise RunError(
            f"{best} does not hold iteration {record.iteration}, the best one in the journal "
            f"({'missing: ' + ', '.join(missing) if missing else f'it holds iteration {on_disk}'}). The run was "
            f"interrupted while saving it: run `automodel resume {run.path}` once to repair it.")
    return BestModel(run.path, record.iteration, best, record, run_info(run.path), test_accuracy=record.test_accuracy)


def load_final(run: RunDir) -> BestModel | None:
    """final/ as a BestModel (members for an ensemble), None when the run has none."""
    spec = read_final(run.path)
    if spec is None:
        return None
    by_iter = {r.iteration: r for r in run.iterations()}
    members = []
    for m in spec["members"]:
        folder = run.path / FINAL / m.get("dir", ".")
        iteration = m["refit"] if m.get("refit") is not None else m["iteration"]
        missing = [name for name in (*PIPELINE_FILES, "model.pt") if not (folder / name).is_file()]
        if iteration not in by_iter or missing:
            what = "missing: " + ", ".join(missing) if missing else f"iteration {iteration} is not in the journal"
            raise RunError(f"{folder} is incomplete ({what}). Delete {run.path / FINAL} and run "
                           f"`automodel resume {run.path}` to make the final model again.")
        info = read_json(folder / "info.json") if (folder / "info.json").is_file() else run_info(run.path)
        members.append(BestModel(run.path, iteration, folder, by_iter[iteration], info, spec["kind"],
                                 spec.get("test_accuracy")))
    first = members[0]
    if len(members) == 1:
        return first
    weights = tuple(int(m.get("weight", 1)) for m in spec["members"])
    return replace(first, members=tuple(members), member_weights=weights)


def run_info(run_path: Path) -> dict[str, Any]:
    """The DataInfo the run's pipelines received (data/info.json, else rebuilt from the dataset)."""
    path = Path(run_path) / DATA_DIR / "info.json"
    if path.is_file():
        try:
            info = read_json(path)
            if isinstance(info, dict) and {"class_names", "channels", "image_size", "num_classes"} <= set(info):
                return info
        except ValueError:
            pass
    # data/ is regenerable and may have been deleted to save space.
    from automodel.intake import data_info

    held = HeldOut.load(run_path)
    images = held.dataset.decode()
    info = dict(data_info(held.dataset, images, held.split.train))
    info.update({"device": "cpu", "pretrained_available": False})
    return info


@dataclass
class HeldOut:
    """The run's dataset reopened: the split, labels and decoded images per set."""

    dataset: Any
    split: Any

    @classmethod
    def load(cls, run_path: Path) -> "HeldOut":
        from automodel.search.workspace import reopen

        ds, split = reopen(RunDir.open(Path(run_path)))
        return cls(ds, split)

    def indices(self, name: str) -> list[int]:
        return list(getattr(self.split, name))

    def labels(self, name: str) -> np.ndarray:
        return np.asarray([self.dataset.items[i].label for i in self.indices(name)], dtype=np.int64)

    def relpaths(self, name: str) -> list[str]:
        return [self.dataset.items[i].relpath for i in self.indices(name)]

    def paths(self, name: str) -> list[Path]:
        return [Path(self.dataset.items[i].path) for i in self.indices(name)]

    def images(self, name: str) -> np.ndarray:
        """Decoded uint8 (N, H, W, C) of split `name`, as the run's sandbox saw them."""
        return np.asarray(self.dataset.decode().array[self.indices(name)])


def bundle_images(run_path: Path, name: str) -> np.ndarray | None:
    """data/<name>_x.npy of the run (uint8, memory-mapped), or None when it is not there."""
    path = Path(run_path) / DATA_DIR / f"{name}_x.npy"
    if not path.is_file():
        return None
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return arr if arr.dtype == np.uint8 and arr.ndim == 4 else None


def sample_images(run_path: Path, count: int) -> np.ndarray:
    """A few decoded images of the run for contract checks and parity tests."""
    for name in ("val", "test", "train"):
        arr = bundle_images(run_path, name)
        if arr is not None and len(arr):
            return np.ascontiguousarray(arr[:count])
    try:
        held = HeldOut.load(run_path)
    except AutomodelError as err:
        raise RunError(f"{run_path}/{DATA_DIR} is gone and the dataset cannot be reopened to rebuild sample images: "
                       f"{err}") from None
    return np.ascontiguousarray(held.images("val")[:count])


def read_json_or(path: Path, default: Any) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default
