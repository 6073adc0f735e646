"""The run's model as `automodel serve` runs it: the ONNX export, onnxruntime, and numpy.

    served = load_served(run_path, threads=2, note=print)   # exports first (in the sandbox) when needed
    images = served.decode(data, max_pixels)                # uint8 (H, W, C), as intake decodes; BadImage
    probs = served.probs(served.inputs(np.stack(images)))   # float32 (N, num_classes)
    estimate = measure(served, sample_images)                # latency and memory on this machine

No generated code runs here. The export (made in the sandbox, with its parity
check) leaves model.onnx and model.onnx.json; the JSON's preprocessing (working
size and channels, then scale to [0, 1], resize to the eval size, normalise)
is redone with Pillow and numpy, and matches torch's to about 1e-5.
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from automodel.errors import AutomodelError
from automodel.files import read_json
from automodel.intake.images import decode
from automodel.outputs.bestmodel import BestModel, load_best, sample_images
from automodel.outputs.export import default_out, export_best, preprocessing_path

SERVE_PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart",
                  "onnx": "onnx", "onnxruntime": "onnxruntime"}
ESTIMATE_SECONDS = 1.0    # per batch size, for the start-up estimate
ESTIMATE_BATCHES = (1, 32)


class ServeError(AutomodelError):
    """The run cannot be served (missing packages, no usable export)."""

    exit_code = 9


class BadImage(Exception):
    """An upload the service refuses: `status` is the HTTP code, the message says why and what to send."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def limit_decoding(max_pixels: int) -> None:
    """Make Pillow itself refuse images above the service's pixel limit (a process-wide setting: serve only)."""
    Image.MAX_IMAGE_PIXELS = int(max_pixels)
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the service answers 413 right after


def check_installed() -> None:
    import importlib.util

    missing = [pip for module, pip in SERVE_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ServeError(
            f"automodel serve needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            f"installed. Install the serving extra with `pip install 'automodel[serve]'` (from a clone: "
            f"`pip install '.[serve]'`).")


@dataclass(frozen=True)
class Preprocessing:
    """What the export's JSON says a caller must do to an image before the model sees it."""

    working_size: tuple[int, int]      # (H, W) intake decodes to
    channels: int                      # 1 or 3
    input_size: tuple[int, int]        # (H, W) the model takes
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_spec(cls, spec: dict[str, Any], where: Path) -> "Preprocessing":
        ev = spec.get("eval_transform") or {}
        if not ev.get("recipe_matches") or ev.get("mean") is None or not ev.get("output_size"):
            raise ServeError(
                f"The eval transform of this run does more than resize and normalise ({where} says: "
                f"{ev.get('note') or 'no measured recipe'}), so the service cannot reproduce it without running "
                f"the generated data.py. Use `automodel predict` for this run.")
        work = spec["decode"]["working_size"]
        out = ev["output_size"]
        return cls((int(work["height"]), int(work["width"])), int(spec["decode"]["channels"]),
                   (int(out["height"]), int(out["width"])), tuple(map(float, ev["mean"])), tuple(map(float, ev["std"])))

    def decode(self, data: bytes, max_pixels: int) -> np.ndarray:
        """uint8 (H, W, C) at the working size, decoded as intake decodes files; BadImage when refused."""
        if not data:
            raise BadImage(400, "the upload is empty (0 bytes)")
        try:
            with Image.open(BytesIO(data)) as img:  # reads the header only
                width, height = img.size
        except UnidentifiedImageError:
            raise BadImage(415, "not an image Pillow can read (send PNG, JPEG, BMP, GIF, WebP or TIFF)") from None
        except Image.DecompressionBombError:
            raise BadImage(413, f"the image has too many pixels (more than {max_pixels:,}, --max-pixels)") from None
        except Exception as err:  # noqa: BLE001 - a header the decoder rejects
            raise BadImage(400, f"corrupt image header ({type(err).__name__}: {str(err)[:160]})") from None
        if width * height > max_pixels:
            raise BadImage(
                413, f"the image is {width}x{height} = {width * height:,} pixels, more than the service's limit of "
                     f"{max_pixels:,} (--max-pixels); send a smaller image")
        try:
            return decode(BytesIO(data), self.working_size, self.channels)
        except Exception as err:  # noqa: BLE001 - truncated or corrupt pixel data
            raise BadImage(400, f"corrupt or truncated image ({type(err).__name__}: {str(err)[:160]})") from None

    def inputs(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, C, H, W) for the model from uint8 (N, H, W, C) at the working size."""
        x = images.astype(np.float32) / 255.0
        if x.shape[1:3] != self.input_size:
            h, w = self.input_size
            # Pillow's float bilinear is antialiased when shrinking, like the export's torch replay.
            x = np.stack([np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(img[:, :, c])).resize(
                (w, h), Image.Resampling.BILINEAR)) for c in range(img.shape[2])], axis=-1) for img in x])
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(((x - mean) / std).transpose(0, 3, 1, 2), dtype=np.float32)


@dataclass
class ServedModel:
    run: Path
    iteration: int
    onnx_path: Path
    spec: dict[str, Any]           # the export's preprocessing JSON
    pre: Preprocessing
    classes: list[str]
    scores: dict[str, Any]         # the run's validation and test accuracy of this model
    threads: int
    session: Any                   # onnxruntime.InferenceSession (an ensemble's first member)
    # An ensemble: (preprocessing, session, input name, weight) per member; inputs() then leaves the decoded
    # images as they are and probs() preprocesses them for each member and averages the probabilities.
    members: list[tuple[Preprocessing, Any, str, int]] = field(default_factory=list)

    def decode(self, data: bytes, max_pixels: int) -> np.ndarray:
        return self.pre.decode(data, max_pixels)  # every member decodes to the run's working size

    def inputs(self, images: np.ndarray) -> np.ndarray:
        return images if self.members else self.pre.inputs(images)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.spec["input"]["name"]: x})[0]

    def probs(self, x: np.ndarray) -> np.ndarray:
        if not self.members:
            return softmax(self.logits(x))
        total = sum(softmax(session.run(None, {name: pre.inputs(x)})[0]) * w for pre, session, name, w in self.members)
        return (total / sum(w for *_, w in self.members)).astype(np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _fresh(best: BestModel, onnx: Path, side: Path) -> dict[str, Any] | None:
    """The export's JSON when model.onnx is there and was made from the current best iteration."""
    if not side.is_file():
        return None
    try:
        spec = read_json(side)
    except (OSError, ValueError):
        return None
    ok = isinstance(spec, dict) and spec.get("format") == "onnx" and spec.get("iteration") == best.iteration
    if ok and spec.get("ensemble"):
        ok = all((side.parent / m["model"]).is_file() and (side.parent / m["preprocessing"]).is_file()
                 for m in spec.get("members") or [])
    elif ok and not onnx.is_file():
        ok = False
    return spec if ok else None


def load_served(run_path: Path, threads: int = 0, note: Callable[[str], None] = lambda s: None) -> ServedModel:
    """The run's best model as an onnxruntime session, exporting it first (sandbox + parity check) if needed."""
    check_installed()
    best = load_best(run_path)
    onnx = default_out(best.run, "onnx")
    side = preprocessing_path(onnx)
    spec = _fresh(best, onnx, side)
    if spec is None:
        note(f"automodel: no ONNX export of iteration {best.iteration} yet; exporting it in the sandbox "
             f"(with a parity check against PyTorch)...")
        result = export_best(best.run, "onnx")
        note(f"automodel: exported {result.model} (max abs logit difference {result.max_abs_diff:.1e})")
        spec = read_json(side)
    import onnxruntime as ort

    threads = threads if threads > 0 else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                           else os.cpu_count() or 1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    members = []
    for m in spec.get("members") or [] if spec.get("ensemble") else []:
        member_side = side.parent / m["preprocessing"]
        member_spec = read_json(member_side)
        members.append((Preprocessing.from_spec(member_spec, member_side),
                        ort.InferenceSession(str(side.parent / m["model"]), options,
                                             providers=["CPUExecutionProvider"]),
                        member_spec["input"]["name"], int(m.get("weight", 1))))
    if members:
        pre, session = members[0][0], members[0][1]
    else:
        pre = Preprocessing.from_spec(spec, side)
        session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
    scores = {"iteration": best.iteration, "kind": best.kind,
              "val_accuracy": None if best.kind in ("refit", "ensemble") else best.record.val_accuracy,
              "test_accuracy": best.test_accuracy}
    return ServedModel(best.run, best.iteration, onnx, spec, pre, list(spec.get("classes") or best.classes),
                       scores, threads, session, members)


@dataclass(frozen=True)
class BatchTiming:
    batch: int
    p50_ms_per_image: float
    p95_ms_per_image: float
    images_per_s: float
    runs: int


@dataclass(frozen=True)
class Estimate:
    """What serving costs on this machine, measured at start (model inference on decoded images)."""

    timings: tuple[BatchTiming, ...]
    rss_mb: float                    # resident memory of the serving process after loading and warm-up
    threads: int
    runtime: str

    def to_json(self) -> dict[str, Any]:
        return {"batches": [asdict(t) for t in self.timings], "rss_mb": self.rss_mb, "threads": self.threads,
                "runtime": self.runtime,
                "what": "model inference per image on decoded images (preprocessing included), measured at start"}

    def lines(self) -> list[str]:
        out = [f"Resource estimate on this machine ({self.runtime}, {self.threads} thread(s); inference on decoded "
               f"images):"]
        for t in self.timings:
            out.append(f"  batch {t.batch:>2}: p50 {t.p50_ms_per_image:.3f} ms, p95 {t.p95_ms_per_image:.3f} ms per "
                       f"image, {t.images_per_s:,.0f} images/s ({t.runs} runs)")
        out.append(f"  memory: {self.rss_mb:.0f} MB resident")
        return out


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process in MB (from /proc; 0 where there is none)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def measure(served: ServedModel, images: np.ndarray, seconds: float = ESTIMATE_SECONDS) -> Estimate:
    """p50/p95 latency per image and images/s at batch 1 and 32, then the resident memory."""
    import onnxruntime as ort

    timings = []
    for batch in ESTIMATE_BATCHES:
        reps = int(np.ceil(batch / max(1, len(images))))
        chunk = np.concatenate([images] * reps)[:batch]
        served.probs(served.inputs(chunk))  # warm-up
        times: list[float] = []
        end = time.perf_counter() + seconds
        while len(times) < 5 or (time.perf_counter() < end and len(times) < 2000):
            t = time.perf_counter()
            served.probs(served.inputs(chunk))
            times.append(time.perf_counter() - t)
        per_image = sorted(x / batch for x in times)
        p95 = per_image[min(len(per_image) - 1, int(round(0.95 * (len(per_image) - 1))))]
        timings.append(BatchTiming(batch, round(statistics.median(per_image) * 1000, 4), round(p95 * 1000, 4),
                                   round(batch / statistics.median(times), 1), len(times)))
    return Estimate(tuple(timings), rss_mb(), served.threads, f"onnxruntime {ort.__version__}")


def estimate_images(served: ServedModel) -> np.ndarray:
    """Decoded images of the run to time the model on (uint8 at the working size)."""
    return np.asarray(sample_images(served.run, 32))
