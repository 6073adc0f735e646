"""`automodel export` to ONNX and TorchScript: the exported files, run by their own
runtimes here, reproduce the harness's predictions from the preprocessing JSON alone."""

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from automodel.search.workspace import RunDir

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "automodel.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def preprocess(images: np.ndarray, spec: dict) -> np.ndarray:
    """Follow the JSON's recipe: [0, 1] floats, NCHW, resize when the eval size differs, normalise."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    out = spec["eval_transform"]["output_size"]
    if (x.shape[2], x.shape[3]) != (out["height"], out["width"]):
        shrink = out["height"] < x.shape[2] or out["width"] < x.shape[3]
        x = torch.nn.functional.interpolate(
            x, size=(out["height"], out["width"]), mode="bilinear", align_corners=False, antialias=shrink
        )
    mean = torch.tensor(spec["eval_transform"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(spec["eval_transform"]["std"]).view(1, -1, 1, 1)
    return ((x - mean) / std).numpy().astype(np.float32)


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def harness(finished_run):
    """The test images as the sandbox saw them and the probabilities of the model export exports (the run's
    final refit) for them."""
    from automodel.outputs.bestmodel import load_best

    model = load_best(finished_run).iteration
    return np.load(finished_run / "data" / "test_x.npy"), np.load(finished_run / f"iter_{model:03d}" / "probs_test.npy")


def check_output(proc, out: Path) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.is_file() and out.stat().st_size > 1000
    spec = json.loads(out.with_name(out.name + ".json").read_text())
    assert spec["eval_transform"]["recipe_matches"], spec["eval_transform"]
    assert spec["parity"]["max_abs_diff"] < 1e-3 and spec["parity"]["same_argmax"]
    assert spec["classes"] == RunDir(Path(spec["run"])).info["dataset"]["classes"]
    latency = re.search(r"CPU latency per image \(1 thread\(s\)\): ([0-9.]+) ms", proc.stdout)
    size = re.search(r"\(([0-9.]+) MB\)", proc.stdout)
    assert latency and float(latency.group(1)) > 0, proc.stdout
    assert size and float(size.group(1)) == pytest.approx(out.stat().st_size / 2**20, abs=0.01)
    assert "max abs difference" in proc.stdout
    return spec


def test_onnx_export_matches_the_harness(finished_run, harness, tmp_path):
    ort = importlib.import_module("onnxruntime")
    out = tmp_path / "deploy" / "model.onnx"
    proc = cli("export", finished_run, "--format", "onnx", "--out", out)
    spec = check_output(proc, out)
    images, probs = harness
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == spec["input"]["name"]
    logits = session.run(None, {spec["input"]["name"]: preprocess(images, spec)})[0]
    assert logits.shape == (len(images), len(spec["classes"]))
    assert np.abs(softmax(logits) - probs).max() < 1e-4
    assert (logits.argmax(1) == probs.argmax(1)).all()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_matches_the_harness(finished_run, harness, tmp_path):
    out = tmp_path / "model.torchscript.pt"
    proc = cli("export", finished_run, "--format", "torchscript", "--out", out)
    spec = check_output(proc, out)
    images, probs = harness
    model = torch.jit.load(str(out), map_location="cpu").eval()
    with torch.inference_mode():
        logits = model(torch.from_numpy(preprocess(images, spec))).numpy()
    assert np.abs(softmax(logits) - probs).max() < 1e-4
    assert (logits.argmax(1) == probs.argmax(1)).all()


def test_export_errors_name_the_fix(finished_run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = cli("export", finished_run, "--out", blocker / "m.onnx")
    assert proc.returncode == 2 and "--out" in proc.stderr and "Traceback" not in proc.stderr
    RunDir.create(tmp_path / "ws", "empty", {"dataset": {}})
    proc = cli("export", tmp_path / "ws" / "empty")
    assert proc.returncode == 5 and "no finished iteration" in proc.stderr
