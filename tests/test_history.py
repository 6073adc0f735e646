"""The Analyst's history separates edits tried on the best from those rejected on earlier bests."""

from automodel.core import JournalRecord
from automodel.files import atomic_write_json
from automodel.search.history import build_history, lineage
from automodel.search.workspace import RunDir

MODULE = "X = 1  # a knob\n"


def _run(tmp_path, records):
    run = RunDir.create(tmp_path, "run", {"config": {}})
    for rec in records:
        d = run.fresh_iter_dir(rec["iteration"])
        for m in ("data", "model", "train"):
            (d / f"{m}.py").write_text(MODULE)
        atomic_write_json(d / "metrics.json", {"curves": {}})
        run.append(JournalRecord(final=True, status="ok", target="train", instruction=f"edit {rec['iteration']}",
                                 train_accuracy=0.9, **rec))
    return run


def test_rejections_on_earlier_bests_are_listed_apart_from_those_on_the_best(tmp_path):
    run = _run(tmp_path, [
        {"iteration": 1, "parent": None, "decision_key": None, "accepted": True, "val_accuracy": 0.80},
        {"iteration": 2, "parent": 1, "decision_key": "A", "accepted": False, "val_accuracy": 0.79},
        {"iteration": 3, "parent": 1, "decision_key": "B", "accepted": True, "val_accuracy": 0.82},
        {"iteration": 4, "parent": 3, "decision_key": "C", "accepted": False, "val_accuracy": 0.81},
        {"iteration": 5, "parent": 3, "decision_key": "D", "accepted": True, "val_accuracy": 0.85},
        {"iteration": 6, "parent": 5, "decision_key": "E", "accepted": False, "val_accuracy": 0.84},
    ])
    by_iter = {r.iteration: r for r in run.iterations()}
    assert lineage(by_iter, 5) == [5, 3, 1]
    history = build_history(run, {"num_classes": 10}, {})
    assert history.parent_iteration == 5
    assert [t["key"] for t in history.tried_on_best] == ["E"]
    # A was rejected on iteration 1 and C on iteration 3, both ancestors of the best;
    # the accepted edits B and D are part of the best, not rejections.
    assert [t["key"] for t in history.rejected_on_earlier_best] == ["A", "C"]


def test_history_carries_epochs_and_images_per_second(tmp_path):
    """What each iteration's training consumed reaches the Analyst: for the best and for recent attempts."""
    from automodel.agents.expert.analyst import diagnose

    run = _run(tmp_path, [
        {"iteration": 1, "parent": None, "decision_key": None, "accepted": True, "val_accuracy": 0.70},
        {"iteration": 2, "parent": 1, "decision_key": "A", "accepted": False, "val_accuracy": 0.60},
        {"iteration": 3, "parent": 1, "decision_key": "B", "accepted": False, "val_accuracy": 0.65},
    ])
    computes = {1: {"steps": 900, "images": 57600, "epochs": 7.2, "images_per_second": 960.0,
                    "cpu_utilisation": 0.93, "steal_share": 0.05, "batched": True},
                2: {"steps": 400, "epochs": 3.2, "images_per_second": 427.0, "cpu_utilisation": 0.41}}
    for n, compute in computes.items():
        atomic_write_json(run.iter_dir(n) / "metrics.json", {"curves": {}, "compute": compute})
    (run.iter_dir(3) / "metrics.json").write_text("{not json")  # unreadable: no figures, no crash
    history = build_history(run, {"num_classes": 10}, {})
    assert history.best["compute"] == {"epochs": 7.2, "images_per_second": 960.0, "steps": 900,
                                       "cpu_utilisation": 0.93, "steal_share": 0.05}
    assert history.best["train_steps"] == 900  # the harness's count, not the step of the last logged loss
    recent = {r["iteration"]: r for r in history.recent}
    assert (recent[2]["epochs"], recent[2]["images_per_second"]) == (3.2, 427.0)  # half the compute of its parent
    assert "epochs" not in recent[3]
    assert recent[1]["steal_share"] == 0.05 and "steal_share" not in recent[2]  # the host took 5% of its CPU
    _, why = diagnose(history.best, history.chance_accuracy)
    assert why.endswith("(7.2 epochs at 960 images/s)")


def test_a_tried_change_is_named_from_the_code_with_its_compute_and_the_instruction_one_level_down(tmp_path):
    from automodel.search.changes import change_label

    before = "WIDTH = 24  # channels\nDEPTH = 2\n\n\ndef build(info):\n    return WIDTH * DEPTH\n"
    assert change_label("model", before, before.replace("WIDTH = 24", "WIDTH = 32")) == "model: WIDTH 24 -> 32"
    rewrite = before.replace("return WIDTH * DEPTH", "x = WIDTH\n    return x * DEPTH + 1") + "DROPOUT = 0.1\n"
    assert change_label("model", before, rewrite) == "model: rewrite +2/-1 lines; DROPOUT = 0.1 (new)"
    assert change_label("train", before, None, "Add  EMA\nof the weights") == "train: Add EMA of the weights"

    run = _run(tmp_path, [
        {"iteration": 1, "parent": None, "decision_key": None, "accepted": True, "val_accuracy": 0.70},
        {"iteration": 2, "parent": 1, "decision_key": "A", "accepted": False, "val_accuracy": 0.60,
         "fidelity": 20.0},
    ])
    (run.iter_dir(2) / "train.py").write_text("X = 2  # a knob\n")
    atomic_write_json(run.iter_dir(2) / "metrics.json",
                      {"curves": {}, "compute": {"steps": 120, "epochs": 1.5, "images_per_second": 300.0}})
    tried = build_history(run, {"num_classes": 10}, {}).tried_on_best
    assert tried == [{"key": "A", "change": "train: X 1 -> 2", "status": "ok", "val_accuracy": 0.60, "steps": 120,
                      "epochs": 1.5, "images_per_second": 300.0, "training_seconds_given": 20.0,
                      "detail": {"target": "train", "instruction": "edit 2"}}]


def test_the_analyst_prompt_shows_each_attempts_compute_and_change_but_not_the_loops_keys(tmp_path):
    import json

    from automodel.agents.llm.analyst import analyst_messages
    from automodel.agents.llm.config import resolve_config

    run = _run(tmp_path, [
        {"iteration": 1, "parent": None, "decision_key": None, "accepted": True, "val_accuracy": 0.70},
        {"iteration": 2, "parent": 1, "decision_key": "train:edit the learning rate", "accepted": False,
         "val_accuracy": 0.66},
        {"iteration": 3, "parent": 1, "decision_key": "B", "accepted": False, "val_accuracy": 0.60,
         "contended": True},
    ])
    (run.iter_dir(2) / "train.py").write_text("X = 3  # a knob\n")
    atomic_write_json(run.iter_dir(3) / "metrics.json",
                      {"curves": {}, "compute": {"steps": 360, "epochs": 2.9, "images_per_second": 384.0,
                                                 "steal_share": 0.66}})
    history = build_history(run, {"num_classes": 10}, {})
    config = resolve_config("m", "http://127.0.0.1:9/v1", None, env={})
    system, user = (m["content"] for m in analyst_messages(history.to_json(), None, config))
    shown = json.loads(user.split("```json\n", 1)[1].split("\n```", 1)[0])
    recent = shown["recent"][-1]
    assert (recent["steps"], recent["images_per_second"], recent["steal_share"], recent["contended"]) == \
        (360, 384.0, 0.66, True)
    assert shown["tried_on_best"][0]["change"] == "train: X 1 -> 3" and "key" not in shown["tried_on_best"][0]
    assert "train:edit the learning rate" not in user
    assert '"contended": true' in system and "ONE JSON object" in system
