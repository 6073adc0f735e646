"""`automodel run DATASET --pipeline DIR`: the real command line in a subprocess."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hostile.kit import HERE, REFERENCE
from scores import accuracy, split_labels


def _pipeline(tmp_path: Path, replace: dict[str, str] | None = None) -> Path:
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    for module in ("data", "model", "train"):
        shutil.copyfile(REFERENCE / f"{module}.py", pipe / f"{module}.py")
    for module, filename in (replace or {}).items():
        shutil.copyfile(HERE / filename, pipe / f"{module}.py")
    return pipe


def test_run_prints_the_typed_record_as_json(cli, materialize, tmp_path):
    data = materialize("fashion-mnist", "imagefolder", 20)
    pipe = _pipeline(tmp_path)
    proc = cli("run", data, "--pipeline", pipe, "--json", "--time-limit", "2", "--device", "cpu", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["status"] == "ok"
    out = pipe / ".run" / "iter"
    assert record["val_accuracy"] == pytest.approx(
        accuracy(out / "probs_val.npy", split_labels(data, "val", seed=1)), abs=1e-6
    )
    assert record["test_accuracy"] == pytest.approx(
        accuracy(out / "probs_test.npy", split_labels(data, "test", seed=1)), abs=1e-6
    )
    assert record["config"]["seed"] == 1 and record["config"]["time_limit"] == 2.0
    assert set(record["timings"]) >= {
        "sandbox_start",
        "imports",
        "data_ready",
        "first_batch",
        "training",
        "prediction",
        "total",
    }
    # DIR gains only .run/, which holds the bundle (no held-out labels) and the iteration.
    assert sorted(p.name for p in pipe.iterdir()) == [".run", "data.py", "model.py", "train.py"]
    assert sorted(p.name for p in (pipe / ".run").iterdir()) == ["data", "iter"]
    assert not list((pipe / ".run").rglob("val_y*")) and not list((pipe / ".run").rglob("test_y*"))
    saved = json.loads((pipe / ".run" / "iter" / "metrics.json").read_text())
    assert saved["val_accuracy"] == record["val_accuracy"]


def test_run_reports_a_broken_module_readably(cli, materialize, tmp_path):
    data = materialize("fashion-mnist", "imagefolder", 20)
    pipe = _pipeline(tmp_path, {"data": "data_syntax_error.py"})
    out = tmp_path / "out"
    proc = cli("run", data, "--pipeline", pipe, "--out", out, "--device", "cpu")
    assert proc.returncode == 1
    assert "status:   contract_error" in proc.stdout
    assert "data.py" in proc.stdout and "line 8" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert (out / "iter" / "metrics.json").is_file() and not (pipe / ".run").exists()


def test_run_without_a_pipeline_folder_says_what_to_do(cli, materialize, tmp_path):
    data = materialize("fashion-mnist", "imagefolder", 20)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "data.py").write_text("")
    proc = cli("run", data, "--pipeline", tmp_path / "half")
    assert proc.returncode == 2
    assert "lacks model.py, train.py" in proc.stderr and "pipelines/reference" in proc.stderr
