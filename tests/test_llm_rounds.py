"""The LLM Analyst proposing a whole round of the budget search in one reply (a JSON list of K changes),
through the real openai client against the replay server; the loop runs on tests/loopkit.py's fake
executor, so only the brain's side is real here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from loopkit import NUM_VAL, FakeExecutor, finals, make_loop

from automodel.agents.llm import make_llm_brain
from automodel.agents.llm.decision import ReplyFormatError, parse_round
from automodel.core import Decision
from automodel.testing.replay_server import ReplayServer

SCRIPTS = Path(__file__).parent / "llm_scripts"

WIDER = {"target": "model", "instruction": "Widen the network: set WIDTH from 24 to 32.", "reason": "under-fit"}
CROP = {"target": "data", "instruction": "Increase CROP_PADDING from 2 to 3.", "reason": "gap"}
SMOOTH = {"target": "train", "instruction": "Lower LABEL_SMOOTHING from 0.1 to 0.05.", "reason": "loss plateau"}


def as_decision(item: dict) -> Decision:
    return Decision(item["target"], item["instruction"], item["reason"])


def test_a_list_reply_gives_distinct_decisions_and_names_what_was_left_out():
    tried = {as_decision(SMOOTH).key()}
    text = "Two ideas:\n```json\n" + json.dumps([WIDER, {"target": "banana", "instruction": "x"}, WIDER, SMOOTH,
                                                  CROP]) + "\n```"
    got = parse_round(text, 3, tried)
    assert got.decisions == [as_decision(WIDER), as_decision(CROP)]
    assert got.problems == [
        "item 2: \"target\" is 'banana'; it must be one of \"data\", \"model\", \"train\" (the module whose engineer "
        "acts).",
        "item 3 repeats item 1",
        "item 4 repeats a change already tried on the best pipeline",
    ]
    # A list wrapped in an object, and a single object, are read too; more items than asked are cut.
    wrapped = parse_round(json.dumps({"candidates": [WIDER, CROP, SMOOTH]}), 2, set())
    assert wrapped.decisions == [as_decision(WIDER), as_decision(CROP)] and wrapped.problems == []
    single = parse_round(json.dumps(CROP), 2, set())
    assert single.decisions == [as_decision(CROP)]
    assert single.problems == ["the reply has 1 usable items; 2 distinct changes were asked for"]
    with pytest.raises(ReplyFormatError, match="no usable item"):
        parse_round(json.dumps([SMOOTH]), 2, tried)


def llm_script(analyst_replies: list[str]) -> dict:
    return {
        "repeat_last": True,
        "roles": {
            "architect": [{"reply_file": str(SCRIPTS / "good_pipeline.md")}],
            "summarizer": [{"reply": '{"data": "crops", "model": "a CNN", "train": "AdamW"}'}],
            "analyst": [{"reply": r} for r in analyst_replies],
            "model_engineer": [{"reply_file": str(SCRIPTS / "model_wider.md")}],
            "data_engineer": [{"reply_file": str(SCRIPTS / "data_more_crop.md")}],
            "train_engineer": [{"reply_file": str(SCRIPTS / "train_less_smoothing.md")}],
        },
    }


def analyst_requests(server: ReplayServer) -> list[dict]:
    return [r for r in server.requests if "ROLE: analyst" in r["messages"][0]["content"]]


def test_each_round_is_one_analyst_reply_of_k_changes_and_a_flawed_list_is_asked_again(tmp_path):
    first = json.dumps([WIDER, CROP])
    # Round 2: one malformed item and one repeat; the list asked again is used.
    flawed = json.dumps([SMOOTH, {"target": "model"}, SMOOTH])
    fixed = json.dumps([SMOOTH, {**WIDER, "instruction": "Add a third residual stage of width 64."}])
    with ReplayServer(llm_script([first, flawed, fixed])) as server:
        brain = make_llm_brain(model="gpt-4o-mini", base_url=server.base_url, env={}, backoff_base=0.05)
        execute = FakeExecutor([0.5, 0.6, 0.55, 0.7, 0.65, 0.8])
        loop = make_loop(tmp_path, brain, execute, search="budget", time_per_iter=20.0, candidates=2, iters=6)
        loop.fit()
        asked = analyst_requests(server)
    records = finals(loop)
    assert [r.kind for r in records] == ["candidate"] * 5 + ["refit"]
    assert [r.round for r in records[:5]] == [0, 1, 1, 2, 2]
    assert [r.instruction for r in records[1:5]] == [
        WIDER["instruction"], CROP["instruction"], SMOOTH["instruction"], "Add a third residual stage of width 64."]
    assert [r.target for r in records[1:5]] == ["model", "data", "train", "model"]
    # One request per round, plus the one retry of round 2 that named what was wrong.
    assert len(asked) == 3
    assert "a JSON list of 2 objects" in asked[0]["messages"][0]["content"]
    # The run lengths it is given are the search's own, without --time-per-iter beside them to contradict them.
    user = asked[0]["messages"][1]["content"]
    assert '"candidate_seconds"' in user and '"final_refit_seconds"' in user and '"time_per_iter"' not in user
    retry = asked[2]["messages"][-1]["content"]
    assert "item 2" in retry and "item 3 repeats item 1" in retry and "a JSON list of 2 objects" in retry
    # The round's call is saved with its first candidate.
    saved = sorted(p.name for p in (loop.run.iter_dir(4) / "llm").iterdir())
    assert any("analyst" in name for name in saved)


def resize_run(tmp_path, refit_outcomes: list, images_per_second: float | None):
    """A budget search of one round (no model change) whose final refit the LLM may resize; the candidates
    trained at `images_per_second` (None: not measured)."""
    script = llm_script([json.dumps([SMOOTH, CROP])])
    compute = {"images_per_second": images_per_second, "epochs": 3.0} if images_per_second else {}
    with ReplayServer(script) as server:
        brain = make_llm_brain(model="gpt-4o-mini", base_url=server.base_url, env={}, backoff_base=0.05)
        execute = FakeExecutor([{"val": v, "compute": compute} for v in (0.5, 0.6, 0.55)] + refit_outcomes)
        loop = make_loop(tmp_path, brain, execute, search="budget", time_per_iter=20.0, candidates=2, iters=4)
        loop.fit()
        resize = [r for r in server.requests if "ROLE: model_engineer" in r["messages"][0]["content"]]
    return loop, execute, resize


def test_the_llm_widens_the_chosen_network_for_a_long_final_refit(tmp_path):
    loop, execute, resize = resize_run(tmp_path, [0.7], images_per_second=2000.0)
    refit = finals(loop)[-1]
    assert refit.kind == "refit" and refit.ok and refit.parent == 2
    # One request, with the arithmetic that motivates it: 2000 images/s for the refit's seconds on train+val.
    (asked,) = resize
    user = asked["messages"][1]["content"]
    seconds, labelled = execute.calls[-1][1], 100 + NUM_VAL
    assert (f"retrains this pipeline once, for {round(seconds)} seconds on all {labelled} labelled images" in user
            and f"about {round(2000 * seconds / labelled)} passes" in user and "about 30 passes" in user)
    # The refit trained the resized model.py; data.py and train.py are the chosen pipeline's.
    wider = (SCRIPTS / "model_wider.md").read_text()
    refit_dir, chosen = loop.run.iter_dir(refit.iteration), loop.run.pipeline(2)
    assert (refit_dir / "model.py").read_text().strip() in wider and chosen.model.strip() not in wider
    assert (refit_dir / "train.py").read_text() == chosen.train
    assert "the Model Engineer resized model.py" in refit.reason and refit.tokens > 0
    assert any("scale_model_engineer" in p.name for p in (refit_dir / "llm").iterdir())


def test_a_resized_network_that_fails_is_refit_as_it_was(tmp_path):
    from loopkit import failed

    loop, execute, resize = resize_run(tmp_path, [failed("model", message="mat1 and mat2 shapes"), 0.7],
                                       images_per_second=2000.0)
    refit = finals(loop)[-1]
    assert len(resize) == 1 and execute.refits[-2:] == [True, True]
    assert refit.ok and "that pipeline failed (mat1 and mat2 shapes)" in refit.reason
    assert loop.run.pipeline(refit.iteration) == loop.run.pipeline(2)
    assert execute.calls[-1][1] <= execute.calls[-2][1]  # the second try gets only the time left


def test_no_resize_is_asked_without_a_measured_speed(tmp_path):
    loop, execute, resize = resize_run(tmp_path, [0.7], images_per_second=None)
    refit = finals(loop)[-1]
    assert resize == [] and refit.ok and "resized" not in refit.reason
    assert loop.run.pipeline(refit.iteration) == loop.run.pipeline(2)
