"""run_iteration end to end: real sandboxed subprocesses on real (small) Fashion-MNIST data."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from hostile.kit import fashion_bundle, fast_config, make_iter, scored_accuracy

from automodel.core import IterationResult
from automodel.sandbox.bundle import prepare_data, train_sample_indices
from automodel.sandbox.iteration import run_iteration


@pytest.fixture(scope="module")
def fm(materialize, tmp_path_factory):
    return fashion_bundle(materialize, tmp_path_factory.mktemp("run") / "data")


def test_prepare_data_keeps_heldout_labels_in_the_parent(fm):
    ds, bundle = fm
    files = sorted(p.name for p in bundle.dir.iterdir())
    assert files == ["bundle.json", "info.json", "test_x.npy", "train_sample_x.npy", "train_x.npy", "train_y.npy",
                     "val_x.npy"]
    assert not any("val_y" in f or "test_y" in f for f in files)
    # The training sample predicted after training: training images, their labels left behind.
    sample = train_sample_indices(bundle.counts["train"])
    assert np.array_equal(np.load(bundle.dir / "train_sample_x.npy"), np.load(bundle.dir / "train_x.npy")[sample])
    info = json.loads((bundle.dir / "info.json").read_text())
    assert info["num_classes"] == 10 and info["channels"] == 1 and info["image_size"] == [28, 28]
    assert info["device"] == "cpu" and info["pretrained_available"] is False
    assert len(bundle.val_y) == len(np.load(bundle.dir / "val_x.npy")) == bundle.counts["val"]
    assert len(bundle.test_y) == len(np.load(bundle.dir / "test_x.npy")) == bundle.counts["test"]
    assert bundle.val_y.dtype == np.int64 and set(bundle.val_y) <= set(range(10))
    train_y = np.load(bundle.dir / "train_y.npy")
    assert len(train_y) == bundle.counts["train"] == info["num_train"]


def test_prepare_data_reuses_a_prepared_folder(fm):
    ds, bundle = fm
    before = {p.name: p.stat().st_mtime_ns for p in bundle.dir.iterdir()}
    again = prepare_data(ds, ds.split(seed=0), ds.decode(), bundle.dir)
    assert {p.name: p.stat().st_mtime_ns for p in bundle.dir.iterdir()} == before
    assert again.fingerprint == bundle.fingerprint and np.array_equal(again.val_y, bundle.val_y)
    other = prepare_data(ds, ds.split(seed=1), ds.decode(), bundle.dir)  # another split: rewritten
    assert other.fingerprint != bundle.fingerprint
    prepare_data(ds, ds.split(seed=0), ds.decode(), bundle.dir)


@pytest.mark.slow
def test_reference_pipeline_trains_and_is_scored_honestly(fm, tmp_path):
    ds, bundle = fm
    it = make_iter(tmp_path / "iter_001")
    result = run_iteration(it, bundle, fast_config(time_limit=8.0, threads=2))
    assert result.status == "ok", result.error
    assert result.val_accuracy == pytest.approx(scored_accuracy(it / "probs_val.npy", bundle.val_y), abs=1e-6)
    assert result.test_accuracy == pytest.approx(scored_accuracy(it / "probs_test.npy", bundle.test_y), abs=1e-6)
    assert result.test_accuracy > 0.25, (result.timings, {k: v[-1:] for k, v in result.curves.items()})  # chance is 0.1
    assert {"train/loss", "lr"} <= set(result.curves)
    assert all(len(points) <= 200 for points in result.curves.values())
    for key in (
        "sandbox_start",
        "imports",
        "data_ready",
        "first_batch",
        "preflight",
        "training",
        "prediction",
        "total",
    ):
        assert result.timings[key] >= 0, key
    assert result.timings["training"] >= 8.0
    assert (it / "model.pt").stat().st_size > 0
    # The fit diagnostic: a fixed sample of training images, predicted like validation, scored here.
    sample = train_sample_indices(bundle.counts["train"])
    assert len(sample) == min(bundle.counts["train"], 500) and len(np.load(it / "probs_train_sample.npy")) == len(
        sample
    )
    train_y = np.load(bundle.dir / "train_y.npy")[sample]
    assert result.train_eval_accuracy == pytest.approx(
        scored_accuracy(it / "probs_train_sample.npy", train_y), abs=1e-6
    )
    saved = IterationResult.load(it / "metrics.json")
    assert saved == result


def test_printed_and_planted_accuracy_is_ignored(fm, tmp_path):
    ds, bundle = fm
    it = make_iter(tmp_path / "iter", {"train": "train_fake_accuracy.py"})
    result = run_iteration(it, bundle, fast_config())
    assert result.status == "ok", result.error
    assert "val accuracy: 1.0000" in (it / "stdout.txt").read_text()
    truth = scored_accuracy(it / "probs_val.npy", bundle.val_y)
    assert result.val_accuracy == pytest.approx(truth, abs=1e-6) and truth < 0.6
    assert json.loads((it / "metrics.json").read_text())["val_accuracy"] == pytest.approx(truth, abs=1e-6)
    assert not (it / "notes.txt").is_symlink()  # links the child planted are removed


def test_exception_in_train_blames_train_with_traceback(fm, tmp_path):
    ds, bundle = fm
    it = make_iter(tmp_path / "iter", {"train": "train_raises.py"})
    result = run_iteration(it, bundle, fast_config())
    assert result.status == "failed"
    err = result.error
    assert (err.module, err.phase, err.type) == ("train", "preflight", "ValueError")
    assert "targets must be one-hot" in err.message
    assert "_normalise_targets" in err.traceback and "train.py" in err.traceback
    assert result.val_accuracy is None


def test_syntax_error_is_caught_before_any_process_starts(fm, tmp_path):
    ds, bundle = fm
    it = make_iter(tmp_path / "iter", {"data": "data_syntax_error.py"})
    start = time.monotonic()
    result = run_iteration(it, bundle, fast_config())
    assert time.monotonic() - start < 5
    assert result.status == "contract_error"
    assert (result.error.module, result.error.phase, result.error.type) == ("data", "static", "SyntaxError")
    assert "line 8" in result.error.message and "def build_transforms(info)" in result.error.message
    assert not (it / "events.jsonl").exists()  # nothing was launched
    assert json.loads((it / "metrics.json").read_text())["status"] == "contract_error"


def test_wrong_signature_is_caught_statically(fm, tmp_path):
    ds, bundle = fm
    it = make_iter(tmp_path / "iter", {"train": "train_wrong_signature.py"})
    result = run_iteration(it, bundle, fast_config())
    assert result.status == "contract_error" and result.error.module == "train"
    assert "train(model, data, ctx)" in result.error.message


def test_wrong_output_shape_fails_the_contract_check_in_seconds(fm, tmp_path):
    ds, bundle = fm
    it = make_iter(tmp_path / "iter", {"model": "model_wrong_shape.py"})
    result = run_iteration(it, bundle, fast_config(time_limit=120.0))
    assert result.status == "contract_error"
    assert (result.error.module, result.error.phase) == ("model", "contract")
    assert "(2, 11)" in result.error.message and "info.num_classes" in result.error.message
    assert "training" not in result.timings  # never got to train


def test_missing_package_names_the_packages_that_can_be_imported(fm, tmp_path):
    _, bundle = fm
    it = make_iter(tmp_path / "iter")
    with open(it / "data.py", "a") as fh:
        fh.write("\nimport notapackage_xyz  # installed nowhere, and the sandbox has no network\n")
    result = run_iteration(it, bundle, fast_config())
    assert result.status == "contract_error"
    err = result.error
    assert (err.module, err.phase, err.type) == ("data", "import", "ModuleNotFoundError")
    assert err.message.startswith("No module named 'notapackage_xyz'. Generated code can import torch, torchvision")
    assert "numpy" in err.message and "Python standard library" in err.message
    assert "no network access, so no other package can be installed" in err.message


def test_nan_predictions_fail_with_a_clear_error(fm, tmp_path):
    ds, bundle = fm
    it = make_iter(tmp_path / "iter", {"train": "train_nan.py"})
    result = run_iteration(it, bundle, fast_config())
    assert result.status == "failed"
    assert result.error.phase == "score" and "NaN" in result.error.message and "probs_val.npy" in result.error.message
    assert result.val_accuracy is None


def test_overrunning_train_is_interrupted_and_scored_from_its_checkpoint(fm, tmp_path):
    ds, bundle = fm
    it = make_iter(tmp_path / "iter", {"train": "train_overrun.py"})
    result = run_iteration(it, bundle, fast_config(time_limit=2.0, interrupt_grace=1.0))
    assert result.status == "ok", result.error
    assert result.interrupted and result.used_checkpoint
    assert result.val_accuracy == pytest.approx(scored_accuracy(it / "probs_val.npy", bundle.val_y), abs=1e-6)
    assert result.timings["training"] >= 3.0
