"""Export a run's best model: `automodel export RUN_DIR --format onnx|torchscript`.

The export runs in the sandbox (export_child.py): it imports the generated
model.py, so it obeys the rule that generated code never runs here. Back in
this process the exported file is copied out (no links followed) and a small
JSON is written next to it that spells out the preprocessing a caller must do
before feeding the model: how images are decoded (working size, channels,
channel order, resize-and-crop), then the eval transform measured in the
sandbox (scale to [0, 1], output size, per-channel mean/std), the input and
output tensors, and the class names in output order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from automodel.errors import AutomodelError, UsageError
from automodel.files import atomic_write_json, read_untrusted_json, remove_tree
from automodel.outputs.bestmodel import BestModel, load_best, sample_images
from automodel.outputs.predict import check_writable
from automodel.sandbox import tools as toolrun

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
PARITY_SAMPLES = 16       # decoded run images the exported model is checked on
LATENCY_SECONDS = 2.0     # per runtime, for the single-image latency measurement
EXPORT_TIMEOUT = 600.0    # s for the whole sandboxed export
PARITY_TOLERANCE = 1e-3   # max abs logit difference accepted as "matches"


class ExportError(AutomodelError):
    """The best model could not be exported (or the export does not match PyTorch)."""

    exit_code = 9


@dataclass(frozen=True)
class ExportResult:
    model: Path                  # the exported file
    preprocessing: Path          # the JSON next to it
    size_bytes: int
    max_abs_diff: float
    same_argmax: bool
    latency_ms: float            # exported runtime, one image, CPU
    pytorch_latency_ms: float
    samples: int
    threads: int
    sandbox: str
    details: dict[str, Any]
    members: tuple[Path, ...] = ()  # an ensemble's files, one per member (model is the first)

    def text(self) -> str:
        what = (f"Exported the final ensemble of {len(self.members)} models: {', '.join(str(m) for m in self.members)} "
                f"({self.size_bytes / 2**20:.2f} MB in all); {self.preprocessing} says how to combine them."
                if self.members else f"Exported iteration {self.details['iteration']}'s model to {self.model} "
                f"({self.size_bytes / 2**20:.2f} MB).")
        return "\n".join(
            [
                what,
                f"Parity with PyTorch on {self.samples} images: max abs difference of the logits "
                f"{self.max_abs_diff:.2e}"
                f" ({'same' if self.same_argmax else 'DIFFERENT'} predicted classes).",
                f"CPU latency per image ({self.threads} thread(s)): {self.latency_ms:.3f} ms with "
                f"{self.details['runtime']}"
                f", {self.pytorch_latency_ms:.3f} ms in PyTorch.",
                f"Preprocessing: {self.preprocessing}",
            ]
        )


def default_out(run_path: Path, fmt: str) -> Path:
    return Path(run_path) / "export" / f"model{FORMATS[fmt]}"


def preprocessing_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".json")


def _check_runtime(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}.")
    if fmt == "onnx":
        missing = [m for m in ("onnx", "onnxruntime") if not _importable(m)]
        if missing:
            raise ExportError(
                f"ONNX export needs the {' and '.join(missing)} package(s), which are not installed. "
                f"Install them with `pip install 'automodel[export]'` (or `pip install onnx onnxruntime`), "
                f"or use --format torchscript."
            )


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def export_best(
    run_path: Path,
    fmt: str = "onnx",
    out: Path | None = None,
    *,
    threads: int = 1,
    level: str | None = None,
    timeout: float = EXPORT_TIMEOUT,
) -> ExportResult:
    """Export the model of `run_path` in `fmt`; ExportError/RunError/UsageError say what to fix.

    An ensemble (the budget search's final model) is exported as one file per member, MODEL.memberK.EXT,
    each with its own preprocessing JSON and parity check, and MODEL.EXT.json says how to combine them:
    average the members' softmax probabilities with their weights."""
    _check_runtime(fmt)
    best = load_best(run_path)
    out = Path(out) if out is not None else default_out(best.run, fmt)
    check_writable(out)
    side = preprocessing_path(out)
    check_writable(side)
    if not best.members:
        return _export_one(best, fmt, out, threads=threads, level=level, timeout=timeout)
    suffix = FORMATS[fmt]
    stem = out.name[: -len(suffix)] if out.name.endswith(suffix) else out.stem
    results = [_export_one(member, fmt, out.with_name(f"{stem}.member{k}{suffix}"), threads=threads, level=level,
                           timeout=timeout) for k, (member, _) in enumerate(best.parts(), start=1)]
    out.unlink(missing_ok=True)  # a single-model export of an earlier final model would be mistaken for this one
    _write_json(side, ensemble_spec(best, results, fmt))
    first = results[0]
    details = dict(first.details, iteration=best.iteration, members=[r.details["iteration"] for r in results])
    return ExportResult(first.model, side, sum(r.size_bytes for r in results), max(r.max_abs_diff for r in results),
                        all(r.same_argmax for r in results), sum(r.latency_ms for r in results),
                        sum(r.pytorch_latency_ms for r in results), first.samples, first.threads, first.sandbox,
                        details, tuple(r.model for r in results))


def ensemble_spec(best: BestModel, results: list["ExportResult"], fmt: str) -> dict[str, Any]:
    return {
        "format": fmt,
        "ensemble": True,
        "run": str(best.run),
        "iteration": best.iteration,
        "classes": best.classes,
        "combine": "run each member on the image with its own preprocessing (its JSON), apply softmax to its "
                   "logits, and average the probabilities with the members' weights",
        "members": [{"model": r.model.name, "preprocessing": r.preprocessing.name, "weight": w,
                     "iteration": r.details["iteration"]} for r, (_, w) in zip(results, best.parts())],
    }


def _export_one(best: BestModel, fmt: str, out: Path, *, threads: int, level: str | None,
                timeout: float) -> ExportResult:
    """Export one pipeline's model to `out` (and its preprocessing JSON beside it)."""
    side = preprocessing_path(out)
    images = sample_images(best.run, PARITY_SAMPLES)

    work, data, pipe = toolrun.pipeline_workdir(best.dir)
    try:
        np.save(data / "sample_x.npy", images, allow_pickle=False)
        spec = {
            "mode": "export",
            "format": fmt,
            "out_name": f"model{FORMATS[fmt]}",
            "sample_set": "sample",
            "info": dict(best.info, device="cpu"),
            "device": "cpu",
            "latency_seconds": LATENCY_SECONDS,
        }
        result = toolrun.run_tool(
            toolrun.EXPORT_CHILD,
            pipe,
            data,
            spec,
            timeout=timeout,
            threads=max(1, threads),
            hidden=(best.run,),
            level=level,
        )
        if not result.ok:
            raise ExportError(
                f"Exporting the best model of {best.run} (iteration {best.iteration}) to {fmt} failed in the sandbox: "
                f"{result.describe()}. Models with data-dependent Python control flow may not export to ONNX; "
                f"try --format {'torchscript' if fmt == 'onnx' else 'onnx'}."
            )
        report = read_untrusted_json(pipe / "export.json")
        if not report or report.get("file") != spec["out_name"]:
            raise ExportError(
                f"The sandboxed export of {best.run} finished without a readable export.json; "
                f"its last output was:\n{result.stderr_tail}"
            )
        size = toolrun.copy_child_file(pipe / spec["out_name"], out)
    finally:
        remove_tree(work)

    diff = float(report.get("max_abs_diff", float("inf")))
    if not np.isfinite(diff) or diff > PARITY_TOLERANCE:
        out.unlink(missing_ok=True)
        raise ExportError(
            f"The {fmt} export of {best.run}'s best model does not reproduce PyTorch's outputs: the logits "
            f"differ by up to {diff:.3g} on {report.get('samples')} images (tolerance {PARITY_TOLERANCE}). "
            f"Try --format {'torchscript' if fmt == 'onnx' else 'onnx'}."
        )
    details = dict(report, iteration=best.iteration, sandbox=result.sandbox)
    _write_json(side, preprocessing_spec(best, report, out))
    return ExportResult(
        out,
        side,
        size,
        diff,
        bool(report.get("same_argmax")),
        float(report.get("latency_ms_per_image", 0.0)),
        float(report.get("pytorch_latency_ms_per_image", 0.0)),
        int(report.get("samples", 0)),
        int(report.get("threads", threads)),
        result.sandbox,
        details,
    )


def preprocessing_spec(best: BestModel, report: dict[str, Any], model_path: Path) -> dict[str, Any]:
    """Everything a caller must do to an image file before the exported model sees it."""
    h, w = best.image_size
    pre = report.get("preprocessing") or {}
    channels = best.channels
    measured = bool(pre.get("recipe_matches"))
    steps = [
        f"decode the file; apply its EXIF orientation; composite transparency on white; convert to "
        f"{'grayscale (L)' if channels == 1 else 'RGB'}",
        f"resize (bilinear) so the image covers {w}x{h} (width x height) keeping its aspect ratio, then crop the "
        f"centre {w}x{h}",
        "convert to float32 in [0, 1] (divide by 255) and to channels-first (C, H, W)",
    ]
    out_shape = pre.get("output_shape") or report.get("input_shape", [None])[1:]
    if out_shape and list(out_shape[1:]) != [h, w]:
        steps.append(f"resize (bilinear, antialiased when shrinking) to {out_shape[2]}x{out_shape[1]} (width x height)")
    if pre.get("mean") is not None:
        steps.append("subtract `mean` and divide by `std`, per channel")
    steps.append(
        "stack images into a float32 batch (B, C, H, W); the model returns logits (B, num_classes): apply softmax "
        "for probabilities"
    )
    return {
        "model": model_path.name,
        "format": report.get("format"),
        "run": str(best.run),
        "iteration": best.iteration,
        "classes": best.classes,
        "decode": {
            "working_size": {"height": h, "width": w},
            "channels": channels,
            "channel_order": "L" if channels == 1 else "RGB",
            "resize": "cover then centre crop, bilinear (PIL), as automodel intake decodes",
        },
        "input": {
            "name": "input",
            "shape": report.get("input_shape"),
            "dtype": "float32",
            "layout": "NCHW",
            "value_range_before_normalisation": [0.0, 1.0],
        },
        "output": {"name": "logits", "shape": report.get("output_shape"), "softmax_applied": False},
        "eval_transform": {
            "output_size": {"channels": out_shape[0], "height": out_shape[1], "width": out_shape[2]}
            if out_shape
            else None,
            "mean": pre.get("mean"),
            "std": pre.get("std"),
            "measured": "from the eval transform's outputs for an all-black and an all-white image, then replayed on "
                        "real images",
            "recipe_max_abs_diff": pre.get("recipe_max_abs_diff"),
            "recipe_matches": measured,
            "note": None
            if measured
            else (
                "The eval transform does more than resize + normalise (the replay differed): "
                "use the run's best/data.py eval transform, or `automodel predict`."
            ),
        },
        "steps": steps,
        "parity": {
            "samples": report.get("samples"),
            "max_abs_diff": report.get("max_abs_diff"),
            "same_argmax": report.get("same_argmax"),
            "runtime": report.get("runtime"),
        },
        "cpu_latency_ms_per_image": report.get("latency_ms_per_image"),
        "pytorch_cpu_latency_ms_per_image": report.get("pytorch_latency_ms_per_image"),
        "threads": report.get("threads"),
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    try:
        atomic_write_json(path, data)
    except OSError as err:
        raise UsageError(f"Cannot write {path} ({err.strerror or err}). Choose another path with --out.") from None
