"""Trusted scoring of untrusted prediction files, and reading the child's logs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from automodel.core import ErrorInfo, IterationResult, SandboxInfo
from automodel.files import atomic_write_text
from automodel.sandbox import scoring
from automodel.sandbox.child_files import read_curves


def _probs(labels, num_classes=3, right=True):
    out = np.full((len(labels), num_classes), 0.1, dtype=np.float32)
    for i, y in enumerate(labels):
        out[i, y if right else (y + 1) % num_classes] = 0.8
    return out


def test_accuracy_is_computed_from_argmax(tmp_path):
    labels = np.array([0, 1, 2, 2])
    probs = _probs(labels)
    probs[3] = [0.9, 0.05, 0.05]
    np.save(tmp_path / "probs_val.npy", probs)
    assert scoring.score_file(tmp_path / "probs_val.npy", labels, 3) == 0.75


@pytest.mark.parametrize("bad, match", [
    (np.zeros((4, 2), np.float32), r"shape \(4, 2\); expected \(4, 3\)"),
    (np.zeros((3, 3), np.float32), r"shape \(3, 3\); expected \(4, 3\)"),
    (np.zeros(12, np.float32), r"shape \(12,\)"),
    (np.array([[np.nan, 0, 0]] * 4, np.float32), "NaN or inf in 4 of 4 rows"),
    (np.array([["a", "b", "c"]] * 4), "expected float probabilities"),
])
def test_malformed_predictions_are_refused_with_the_reason(tmp_path, bad, match):
    np.save(tmp_path / "probs_val.npy", bad)
    with pytest.raises(scoring.ScoringError, match=match):
        scoring.score_file(tmp_path / "probs_val.npy", np.array([0, 1, 2, 0]), 3)


def test_missing_pickled_and_garbage_files_are_refused(tmp_path):
    labels = np.array([0, 1])
    with pytest.raises(scoring.ScoringError, match="missing"):
        scoring.score_file(tmp_path / "probs_val.npy", labels, 3)
    np.save(tmp_path / "probs_val.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(scoring.ScoringError, match="not a readable .npy"):
        scoring.score_file(tmp_path / "probs_val.npy", labels, 3)
    (tmp_path / "probs_val.npy").write_bytes(b"val accuracy: 1.0")
    with pytest.raises(scoring.ScoringError, match="not a readable .npy"):
        scoring.score_file(tmp_path / "probs_val.npy", labels, 3)


def test_a_link_to_another_file_is_not_followed(tmp_path):
    """A child could link its output to a host file; the parent must not read through it."""
    labels = np.array([0, 1, 2])
    np.save(tmp_path / "elsewhere.npy", _probs(labels))
    os.symlink(tmp_path / "elsewhere.npy", tmp_path / "probs_val.npy")
    with pytest.raises(scoring.ScoringError, match="not a link"):
        scoring.score_file(tmp_path / "probs_val.npy", labels, 3)


def test_curves_are_train_only_bounded_and_downsampled(tmp_path):
    lines = [{"tag": "train/loss", "value": 1.0 / (s + 1), "step": s, "phase": "train"} for s in range(1000)]
    lines += [{"tag": "train/loss", "value": 9.0, "step": 0, "phase": "preflight"}]
    lines += [
        {"tag": "x" * 100, "value": 1.0, "step": 0, "phase": "train"},
        {"tag": "lr", "value": float("nan"), "step": 1, "phase": "train"},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\nnot json\n"
    (tmp_path / "curves.jsonl").write_text(text)
    curves = read_curves(tmp_path / "curves.jsonl")
    assert list(curves) == ["train/loss"]
    points = curves["train/loss"]
    assert len(points) == 200 and points[0] == [0, 1.0] and points[-1][0] == 999
    assert all(v != 9.0 for _, v in points)


def test_metrics_json_is_written_atomically_and_not_through_a_planted_link(tmp_path):
    target = tmp_path / "host_file.txt"
    target.write_text("keep me")
    it = tmp_path / "iter"
    it.mkdir()
    os.symlink(target, it / "metrics.json")
    atomic_write_text(it / "metrics.json", "{}")
    assert target.read_text() == "keep me"
    assert not (it / "metrics.json").is_symlink() and (it / "metrics.json").read_text() == "{}"


def test_iteration_result_round_trips_through_json():
    result = IterationResult(
        status="failed",
        val_accuracy=None,
        test_accuracy=None,
        error=ErrorInfo("train", "train", "ValueError", "boom", "Traceback ..."),
        curves={"lr": [[1, 0.1]]},
        timings={"total": 1.0},
        sandbox=SandboxInfo("none", ("network isolation",)),
    )
    again = IterationResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result
    # A record written before the result gained fields still loads, with their defaults.
    old = {k: v for k, v in result.to_json().items() if k not in ("peak_processes", "disk_mb", "logs_truncated")}
    old["sandbox"] = {"kind": "none", "missing": ["network isolation"]}
    assert IterationResult.from_json(old) == result
    assert "train.py failed in phase 'train' with ValueError: boom" in again.error.text()
