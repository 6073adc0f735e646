"""A run's final model reaches every output: predict, export and serve use final/ before best/, and an
ensemble's members are averaged with their weights in each of them (real sandboxed children, real
ONNX files run by onnxruntime)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from automodel.files import atomic_write_json
from automodel.outputs.bestmodel import load_best, sample_images
from automodel.outputs.export import export_best
from automodel.outputs.predict import predict_arrays
from automodel.search.workspace import RunDir, read_final

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ensemble_run(finished_run, tmp_path_factory) -> Path:
    """The finished run with its final model replaced by an ensemble of two real trained pipelines:
    iteration 1 (weight 1) and the final refit (weight 2), as search/final.py lays it out."""
    run = tmp_path_factory.mktemp("ensemble") / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    spec = read_final(run)
    assert spec is not None and spec["kind"] == "refit", "the finished run should end with a final refit"
    refit = spec["members"][0]["refit"]
    final = run / "final"
    shutil.rmtree(final)
    sources = {"member_1": (run / "iter_001", run / "data" / "info.json"),
               "member_2": (run / f"iter_{refit:03d}", run / "data_refit" / "info.json")}
    for name, (src, info) in sources.items():
        (final / name).mkdir(parents=True)
        for file in ("data.py", "model.py", "train.py", "model.pt"):
            shutil.copy2(src / file, final / name / file)
        shutil.copy2(info, final / name / "info.json")
    atomic_write_json(final / "FINAL.json", {
        "kind": "ensemble", "val_accuracy": None, "test_accuracy": None, "seconds": 0.0, "reason": "test",
        "members": [{"iteration": 1, "refit": None, "weight": 1, "dir": "member_1"},
                    {"iteration": spec["members"][0]["iteration"], "refit": refit, "weight": 2, "dir": "member_2"}]})
    return run


def test_the_finished_run_serves_its_refit_from_final(finished_run):
    model = load_best(finished_run)
    spec = read_final(finished_run)
    assert model.kind == "refit" and model.dir == finished_run / "final"
    assert model.iteration == spec["members"][0]["refit"]
    # The refit was trained on train+val: its DataInfo counts both.
    run = RunDir(finished_run)
    split = run.info["split"]
    assert model.info["num_train"] == len(split["train"]) + len(split["val"])


def test_predict_export_and_serve_average_an_ensembles_members(ensemble_run, tmp_path):
    images = np.ascontiguousarray(sample_images(ensemble_run, 12))
    model = load_best(ensemble_run)
    assert model.kind == "ensemble" and [w for _, w in model.parts()] == [1, 2]
    each = [predict_arrays(member, images)[0] for member, _ in model.parts()]
    both = predict_arrays(model, images)[0]
    np.testing.assert_allclose(both, (each[0] + 2 * each[1]) / 3, atol=1e-5)
    assert not np.allclose(each[0], each[1], atol=1e-3), "two different models make the test meaningful"

    out = tmp_path / "export" / "model.onnx"
    result = export_best(ensemble_run, "onnx", out)
    members = [tmp_path / "export" / "model.member1.onnx", tmp_path / "export" / "model.member2.onnx"]
    assert list(result.members) == members and all(m.is_file() for m in members) and not out.exists()
    spec = json.loads((tmp_path / "export" / "model.onnx.json").read_text())
    assert spec["ensemble"] and [m["weight"] for m in spec["members"]] == [1, 2]
    assert result.max_abs_diff < 1e-3

    # Serving the run reads that spec (made here at the default place first) and averages the members.
    export_best(ensemble_run, "onnx")
    from automodel.outputs.servemodel import load_served

    served = load_served(ensemble_run, threads=1)
    assert len(served.members) == 2 and served.scores["kind"] == "ensemble"
    np.testing.assert_allclose(served.probs(served.inputs(images)), both, atol=2e-3)
