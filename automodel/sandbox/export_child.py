"""The export harness that runs INSIDE the sandbox, next to the generated modules.

Stand-alone like sandbox_child.py (whose loading and contract-check code it
reuses from the same folder), because exporting means importing model.py and
data.py, which only ever run sandboxed.

    python export_child.py SPEC.json

SPEC.json (written by the parent, paths as seen inside the sandbox):
    pipeline_dir, data_dir, out_dir, weights, info, threads   as for sandbox_child
    format          "onnx" | "torchscript"
    out_name        file name of the exported model, written in out_dir
    sample_set      <name>_x.npy in data_dir: decoded images to check parity on
    latency_seconds how long to time single-image inference (per runtime)

Writes in out_dir: the exported model, export.json (shapes, parity, latency,
the preprocessing the eval transform was measured to do), error.json on failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path
from types import SimpleNamespace

OPSET = 17
LATENCY_MIN_RUNS = 5
LATENCY_MAX_RUNS = 200


def _sandbox_child():
    path = Path(__file__).with_name("child.py")
    spec = importlib.util.spec_from_file_location("automodel_sandbox_child", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _logits_module(torch, model):
    """The model with a single tensor output (some return tuples; the harness uses the first)."""

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            out = self.inner(x)
            if isinstance(out, (tuple, list)):
                out = out[0]
            return out

    return Logits(model).eval()


def _latency_ms(fn, x1, seconds: float) -> float:
    """Median wall time of one single-image call, in milliseconds, after a warm-up."""
    for _ in range(3):
        fn(x1)
    times = []
    end = time.perf_counter() + seconds
    while len(times) < LATENCY_MIN_RUNS or (time.perf_counter() < end and len(times) < LATENCY_MAX_RUNS):
        t = time.perf_counter()
        fn(x1)
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1000.0, 4)


def measure_preprocessing(torch, np, eval_tf, info, images) -> dict:
    """What the eval transform does, measured rather than read from the code.

    Assumes the common shape: x / 255, resize to (H2, W2), (x - mean) / std per
    channel. Mean and std are solved from an all-black and an all-white image;
    the recipe is then replayed on real images and the difference reported, so
    a transform that does something else is flagged, not silently mis-described.
    """
    h, w = (int(v) for v in info.image_size)
    c = int(info.channels)
    black = eval_tf(np.zeros((h, w, c), dtype=np.uint8)).float()
    white = eval_tf(np.full((h, w, c), 255, dtype=np.uint8)).float()
    out_shape = [int(v) for v in black.shape]
    lo = black.flatten(1).mean(dim=1)
    hi = white.flatten(1).mean(dim=1)
    span = hi - lo
    recipe = {
        "output_shape": out_shape,
        "mean": None,
        "std": None,
        "recipe_max_abs_diff": None,
        "recipe_matches": False,
    }
    if out_shape[0] != c or bool((span.abs() < 1e-8).any()):
        return recipe
    std = 1.0 / span
    mean = -lo * std
    recipe["mean"] = [round(float(v), 6) for v in mean]
    recipe["std"] = [round(float(v), 6) for v in std]
    worst = 0.0
    for img in images[:8]:
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(255.0)
        if tuple(x.shape[1:]) != tuple(out_shape[1:]):
            shrink = out_shape[1] < x.shape[1] or out_shape[2] < x.shape[2]
            x = torch.nn.functional.interpolate(
                x[None], size=tuple(out_shape[1:]), mode="bilinear", align_corners=False, antialias=shrink
            )[0]
        replay = (x - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)
        worst = max(worst, float((replay - eval_tf(np.asarray(img)).float()).abs().max()))
    recipe["recipe_max_abs_diff"] = worst
    recipe["recipe_matches"] = worst < 1e-3
    return recipe


def export(spec: dict) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(max(1, int(spec.get("threads", 1))))
    sc = _sandbox_child()
    pipeline = Path(spec["pipeline_dir"])
    data_dir = Path(spec["data_dir"])
    out_dir = Path(spec["out_dir"])
    info = SimpleNamespace(**spec["info"])
    info.image_size = tuple(info.image_size)
    sys.path.insert(0, str(pipeline))

    mods = {name: sc.load_module(name, pipeline / f"{name}.py") for name in sc.MODULES}
    images = np.load(data_dir / f"{spec.get('sample_set', 'sample')}_x.npy")
    sc.seed_all(torch, np, 0)
    sample = [np.asarray(images[i]) for i in range(min(3, len(images)))]
    transforms, _ = sc.check_contract(torch, np, mods, info, sample, "cpu")

    def eval_tf(img):  # one image, whichever path data.py takes
        return transforms.eval_batch(torch, np, np.asarray(img)[None], "cpu")[0]

    model = mods["model"].build_model(info)
    model.load_state_dict(torch.load(spec["weights"], map_location="cpu", weights_only=True))
    model = _logits_module(torch, model.eval())

    x = torch.stack([eval_tf(np.asarray(img)) for img in images]).float().contiguous()
    x1 = x[:1].contiguous()
    with torch.inference_mode():
        reference = model(x).float().numpy()
    path = out_dir / spec["out_name"]
    fmt = spec["format"]
    latency = spec.get("latency_seconds", 2.0)
    t0 = time.time()
    if fmt == "onnx":
        import onnxruntime as ort

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter announces its own deprecation
            try:
                torch.onnx.export(
                    model,
                    (x1,),
                    str(path),
                    dynamo=False,
                    input_names=["input"],
                    output_names=["logits"],
                    dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                    opset_version=OPSET,
                )
            except TypeError:  # a torch without the `dynamo` switch
                torch.onnx.export(
                    model,
                    (x1,),
                    str(path),
                    input_names=["input"],
                    output_names=["logits"],
                    dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                    opset_version=OPSET,
                )
        export_s = time.time() - t0
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(spec.get("threads", 1)))
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        exported = session.run(None, {"input": x.numpy()})[0]
        run_exported = lambda a: session.run(None, {"input": a})  # noqa: E731
        exported_latency = _latency_ms(run_exported, x1.numpy(), latency)
        runtime = f"onnxruntime {ort.__version__}"
    elif fmt == "torchscript":
        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(model, x1, check_trace=False)
        torch.jit.save(traced, str(path))
        export_s = time.time() - t0
        loaded = torch.jit.load(str(path), map_location="cpu").eval()
        with torch.inference_mode():
            exported = loaded(x).float().numpy()

        def run_exported(a):
            with torch.inference_mode():
                return loaded(a)

        exported_latency = _latency_ms(run_exported, x1, latency)
        runtime = f"torch {torch.__version__} (TorchScript)"
    else:
        raise ValueError(f"unknown export format {fmt!r}")

    def run_eager(a):
        with torch.inference_mode():
            return model(a)

    return {
        "format": fmt,
        "file": spec["out_name"],
        "runtime": runtime,
        "input_shape": ["batch", *[int(v) for v in x.shape[1:]]],
        "output_shape": ["batch", int(reference.shape[1])],
        "samples": int(len(x)),
        "max_abs_diff": float(np.abs(exported.astype(np.float64) - reference.astype(np.float64)).max()),
        "same_argmax": bool((exported.argmax(axis=1) == reference.argmax(axis=1)).all()),
        "latency_ms_per_image": exported_latency,
        "pytorch_latency_ms_per_image": _latency_ms(run_eager, x1, latency),
        "threads": int(spec.get("threads", 1)),
        "export_seconds": round(export_s, 3),
        "preprocessing": measure_preprocessing(torch, np, eval_tf, info, images),
        "torch": torch.__version__,
    }


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    out_dir = Path(spec["out_dir"])
    try:
        report = export(spec)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, then a non-zero exit
        if isinstance(exc, KeyboardInterrupt):
            raise
        module = getattr(exc, "module", None)
        if module is None:
            module = None
            for frame in traceback.extract_tb(exc.__traceback__):
                stem = Path(frame.filename).stem
                if stem in ("data", "model", "train"):  # stand-alone: no automodel import here
                    module = stem
        err = {
            "phase": "export",
            "module": module,
            "type": type(exc).__name__,
            "message": str(exc)[:2000],
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-6000:],
        }
        (out_dir / "error.json").write_text(json.dumps(err, indent=2), encoding="utf-8")
        return 4
    (out_dir / "export.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    try:
        code = main(sys.argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip the slow interpreter shutdown with torch loaded
