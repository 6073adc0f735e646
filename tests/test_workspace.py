"""The run directory survives kills: torn journal lines, half-promoted best/, stray folders."""

import json

import pytest

from automodel.core import JournalRecord
from automodel.errors import RunError
from automodel.search.workspace import RunDir


def make_iter(run, n, val):
    d = run.fresh_iter_dir(n)
    for m in ("data", "model", "train"):
        (d / f"{m}.py").write_text(f"# {m} of iteration {n}\n")
    (d / "metrics.json").write_text(json.dumps({"val_accuracy": val}))
    return d


def test_create_refuses_file_workspace_and_existing_run(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(RunError, match="is a file"):
        RunDir.create(f, "r", {})
    run = RunDir.create(tmp_path / "ws", "r", {"a": 1})
    make_iter(run, 1, 0.5)
    with pytest.raises(RunError, match="automodel resume"):
        RunDir.create(tmp_path / "ws", "r", {})


def test_journal_ignores_torn_tail_and_best_is_repaired(tmp_path):
    run = RunDir.create(tmp_path, "r", {})
    make_iter(run, 1, 0.5)
    run.promote(1)
    run.append(JournalRecord(iteration=1, accepted=True, val_accuracy=0.5))
    make_iter(run, 2, 0.7)
    run.promote(2)  # killed after promote, before the journal append ...
    with open(run.path / "journal.jsonl", "a") as fh:
        fh.write('{"iteration": 2, "fin')  # ... in the middle of writing the record
    assert [r.iteration for r in run.iterations()] == [1]
    assert run.remove_incomplete() == [2]
    run.repair_best()
    assert run.best_iteration_on_disk() == 1
    assert (run.path / "best" / "data.py").read_text() == "# data of iteration 1\n"
    run.append(JournalRecord(iteration=2, accepted=False))
    assert [r.iteration for r in run.iterations()] == [1, 2]
    assert run.next_iteration() == 3


def test_open_errors_name_the_fix(tmp_path):
    with pytest.raises(RunError, match="no such folder"):
        RunDir.open(tmp_path / "nope")
    with pytest.raises(RunError, match="run.json"):
        RunDir.open(tmp_path)
