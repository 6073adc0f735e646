"""Apply a run's best model to new images: `automodel predict RUN_DIR IMAGES [--out CSV]`.

Images are decoded in this process exactly as intake decoded the training
data (same working size and channel count, same resize-and-crop), then the
best pipeline's own eval transform and model run on them in the sandbox
(sandbox_child.py in "predict" mode). The probabilities it writes are read
back with the same checks as during training, and the CSV is written here.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from automodel.errors import DatasetError, RunError, UsageError
from automodel.files import atomic_write_text, remove_tree
from automodel.intake.images import decode, is_image_name
from automodel.outputs.bestmodel import BestModel, load_best, sample_images
from automodel.sandbox import scoring
from automodel.sandbox import tools as toolrun

NEW_SET = "new"
CONTRACT_SAMPLES = 3      # training images the harness needs for its contract check
BASE_TIMEOUT = 120.0      # s for start-up, imports and the contract check
PER_IMAGE_TIMEOUT = 0.05  # s per image on top (a slow model on a CPU)


@dataclass
class Predictions:
    """What one predict call produced, in the order of `files`."""

    files: list[str]                  # names as written to the CSV (relative to the folder given)
    paths: list[Path]
    probs: np.ndarray                 # float (N, num_classes), softmax of the best model
    classes: list[str]
    skipped: list[dict] = field(default_factory=list)   # {"path", "reason"} of unreadable images
    sandbox: str = ""

    def labels(self) -> list[str]:
        return [self.classes[i] for i in self.probs.argmax(axis=1)]

    def top_k(self, k: int) -> list[list[tuple[str, float]]]:
        order = np.argsort(-self.probs, axis=1, kind="stable")[:, :k]
        return [[(self.classes[j], float(self.probs[r, j])) for j in row] for r, row in enumerate(order)]


def list_images(target: Path) -> tuple[list[Path], list[str]]:
    """Image files under `target` (a file or a folder, searched recursively), sorted,
    with the names used in the CSV."""
    target = Path(target)
    if not target.exists():
        raise DatasetError(f"{target} does not exist. Give an image file or a folder of images.")
    if target.is_file():
        return [target], [target.name]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(target):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames) if is_image_name(f)]
    if not found:
        raise DatasetError(
            f"{target} contains no images (looked for .png, .jpg, .jpeg, .bmp, .gif, .webp and .tif files in it and "
            "its "
            f"sub-folders). Give a folder that holds the images to classify, or one image file."
        )
    return found, [p.relative_to(target).as_posix() for p in found]


def decode_images(paths: list[Path], names: list[str], size: tuple[int, int], channels: int):
    """uint8 (N, H, W, C) of the readable images and the skipped ones with reasons."""
    arrays, kept_paths, kept_names, skipped = [], [], [], []
    for path, name in zip(paths, names):
        try:
            arr = decode(str(path), size, channels)
        except Exception as err:  # noqa: BLE001 - any decoder failure: skip this file, say why
            skipped.append({"path": name, "reason": f"{type(err).__name__}: {str(err)[:200] or 'unreadable'}"})
            continue
        arrays.append(arr)
        kept_paths.append(path)
        kept_names.append(name)
    stack = np.stack(arrays) if arrays else np.zeros((0, size[0], size[1], channels), dtype=np.uint8)
    return stack, kept_paths, kept_names, skipped


def check_writable(out: Path) -> None:
    """UsageError now, before any work, when `out` cannot be written."""
    out = Path(out)
    if out.exists() and out.is_dir():
        raise UsageError(f"The output path {out} is a folder. Give a file name, e.g. {out / 'predictions.csv'}.")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(
            f"Cannot create the folder {parent} for {out} ({err.strerror or err}). Choose another path with --out."
        ) from None
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UsageError(
            f"Cannot write {out}: no write permission for "
            f"{'the file' if out.exists() else 'its folder ' + str(parent)}. "
            f"Choose another path with --out."
        )


def predict_arrays(
    best: BestModel,
    images: np.ndarray,
    *,
    timeout: float | None = None,
    hidden: tuple[Path, ...] = (),
    threads: int = 0,
    level: str | None = None,
) -> tuple[np.ndarray, str]:
    """Softmax probabilities of the run's model on decoded images, computed in the sandbox (an ensemble's
    members each in their own child, their probabilities averaged with the ensemble's weights)."""
    if len(images) == 0:
        return np.zeros((0, len(best.classes)), dtype=np.float32), ""
    total, used = None, ""
    for model, weight in best.parts():
        probs, used = _predict_one(model, images, timeout=timeout, hidden=hidden, threads=threads, level=level)
        total = probs * weight if total is None else total + probs * weight
    weights = sum(w for _, w in best.parts())
    return (total / weights).astype(np.float32), used


def _predict_one(
    best: BestModel, images: np.ndarray, *, timeout: float | None, hidden: tuple[Path, ...], threads: int,
    level: str | None,
) -> tuple[np.ndarray, str]:
    work, data, pipe = toolrun.pipeline_workdir(best.dir)
    try:
        # The harness checks the contract on a few training-like images first.
        sample = (
            sample_images(best.run, CONTRACT_SAMPLES) if _has_bundle(best) else np.asarray(images[:CONTRACT_SAMPLES])
        )
        np.save(data / "contract_x.npy", np.ascontiguousarray(sample), allow_pickle=False)
        np.save(data / f"{NEW_SET}_x.npy", np.ascontiguousarray(images), allow_pickle=False)
        info = dict(best.info, device="cpu")
        spec = {
            "mode": "predict",
            "info": info,
            "seed": 0,
            "device": "cpu",
            "predict_sets": [NEW_SET],
            "contract_set": "contract",
        }
        limit = timeout if timeout is not None else BASE_TIMEOUT + PER_IMAGE_TIMEOUT * len(images)
        result = toolrun.run_tool(
            toolrun.SANDBOX_CHILD,
            pipe,
            data,
            spec,
            timeout=limit,
            threads=threads,
            hidden=(best.run, *hidden),
            level=level,
        )
        if not result.ok:
            raise RunError(
                f"The best pipeline of {best.run} (iteration {best.iteration}) failed to predict in the sandbox: "
                f"{result.describe()}. Its code is in {best.dir}; if it worked during training, check that the "
                f"run's files were not edited since."
            )
        try:
            probs = scoring.load_probs(pipe / f"probs_{NEW_SET}.npy", len(images), len(best.classes))
        except scoring.ScoringError as err:
            raise RunError(f"The best pipeline of {best.run} wrote unusable predictions: {err}") from None
        return probs, result.sandbox
    finally:
        remove_tree(work)


def _has_bundle(best: BestModel) -> bool:
    return any((best.run / "data" / f"{name}_x.npy").is_file() for name in ("val", "test", "train"))


def predict_paths(run_path: Path, target: Path, **kwargs) -> Predictions:
    """Decode the images at `target` and classify them with the run's best model."""
    best = load_best(run_path)
    paths, names = list_images(target)
    images, kept_paths, kept_names, skipped = decode_images(paths, names, best.image_size, best.channels)
    if not kept_paths:
        examples = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:3])
        raise DatasetError(
            f"None of the {len(paths)} image file(s) at {target} could be read ({examples}). "
            f"Check that they are real PNG/JPEG/BMP/GIF/WebP/TIFF images."
        )
    probs, level = predict_arrays(
        best, images, hidden=(Path(target).resolve(),) if Path(target).is_dir() else (), **kwargs
    )
    return Predictions(kept_names, kept_paths, probs, best.classes, skipped, level)


def csv_text(pred: Predictions, top_k: int = 1) -> str:
    """filename,label,confidence[,label_2,confidence_2,...] for each image."""
    k = max(1, min(int(top_k), len(pred.classes)))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["filename", "label", "confidence"]
    for j in range(2, k + 1):
        header += [f"label_{j}", f"confidence_{j}"]
    writer.writerow(header)
    for name, ranked in zip(pred.files, pred.top_k(k)):
        row = [name]
        for label, conf in ranked:
            row += [label, f"{conf:.6f}"]
        writer.writerow(row)
    return buf.getvalue()


def write_csv(text: str, out: Path) -> Path:
    out = Path(out)
    check_writable(out)
    try:
        atomic_write_text(out, text)
    except OSError as err:
        raise UsageError(f"Cannot write {out} ({err.strerror or err}). Choose another path with --out.") from None
    return out
