"""TensorBoard logs of a real run, read back with TensorBoard's own EventAccumulator."""

import json
import shutil

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from automodel.outputs import tb
from automodel.search.workspace import RunDir

pytestmark = pytest.mark.slow


def scalars(folder):
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_each_iteration_logs_its_training_curves_and_the_harness_scores(finished_run):
    for record in (r.to_json() for r in RunDir(finished_run).iterations()):
        n = record["iteration"]
        metrics = json.loads((finished_run / f"iter_{n:03d}" / "metrics.json").read_text())
        got = scalars(finished_run / "tb" / f"iter_{n:03d}")
        # ctx.log curves the expert's train.py writes, as kept in metrics.json.
        for tag in ("train/loss", "train/accuracy", "lr"):
            assert tag in got, f"iteration {n}: {tag} missing from {sorted(got)}"
            assert [s for s, _ in got[tag]] == [int(p[0]) for p in metrics["curves"][tag]]
            assert [v for _, v in got[tag]] == pytest.approx([p[1] for p in metrics["curves"][tag]], rel=1e-6)
        if record["val_accuracy"] is None:  # the final refit trained on the validation images
            assert record["kind"] == "refit" and "harness/val_accuracy" not in got
        else:
            assert got["harness/val_accuracy"][-1][1] == pytest.approx(record["val_accuracy"], abs=1e-4)
        assert got["harness/test_accuracy"][-1][1] == pytest.approx(record["test_accuracy"], abs=1e-4)
        assert got["time/training_s"][0][1] == pytest.approx(metrics["timings"]["training"], rel=1e-5)


def test_run_scalars_have_one_point_per_iteration_and_the_best_so_far(finished_run):
    records = [r.to_json() for r in RunDir(finished_run).iterations()]
    got = scalars(finished_run / "tb" / "run")
    # The final refit trained on the validation images: it has a test score but no validation point.
    scored = [r for r in records if r["val_accuracy"] is not None]
    assert records[-1]["kind"] == "refit" and scored == records[:-1]
    assert [s for s, _ in got["run/val_accuracy"]] == [r["iteration"] for r in scored]
    assert [v for _, v in got["run/val_accuracy"]] == pytest.approx([r["val_accuracy"] for r in scored], abs=1e-6)
    assert [s for s, _ in got["run/test_accuracy"]] == [r["iteration"] for r in records]
    best = [v for _, v in got["run/best_val_accuracy"]]
    assert best == sorted(best), "the best kept validation accuracy can only rise"
    assert best[-1] == pytest.approx(RunDir(finished_run).best_record().val_accuracy, abs=1e-6)
    assert [v for _, v in got["run/accepted"]] == [1.0 if r["accepted"] else 0.0 for r in records]


def test_rewriting_the_logs_does_not_duplicate_points(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = scalars(run / "tb" / "iter_001")
    tb.log_iteration(run, 1)
    tb.log_iteration(run, 1)
    tb.log_run(run)
    tb.update_after_iteration(run, 2)
    assert scalars(run / "tb" / "iter_001") == before
    scored = [r for r in RunDir(run).iterations() if r.val_accuracy is not None]  # not the final refit
    assert len(scalars(run / "tb" / "run")["run/val_accuracy"]) == len(scored)
    assert tb.log_iteration(run, 99) is None  # no such iteration: nothing written, no error
    assert not (run / "tb" / "iter_099").exists()
