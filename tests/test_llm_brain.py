"""Every LLM role against the replay server (real openai client), and real runs of what it wrote.

The scripted replies in tests/llm_scripts/ hold a real small CNN pipeline that
trains on the CPU in seconds; it runs in the real sandbox through the runner.
"""

import json
from pathlib import Path

import pytest
from scores import accuracy

from automodel.agents.llm import make_llm_brain
from automodel.agents.llm.extract import extract_modules
from automodel.core import Brief, Decision, Hardware, History, JournalRecord, Pipeline
from automodel.errors import BrainError
from automodel.resources import interface_text
from automodel.testing.replay_server import ReplayServer

SCRIPTS = Path(__file__).parent / "llm_scripts"
NOENV: dict[str, str] = {}


def reply(name: str) -> str:
    return (SCRIPTS / name).read_text()


GOOD = Pipeline(**extract_modules(reply("good_pipeline.md")).modules)
WIDER_MODEL = extract_modules(reply("model_wider.md"), ("model",)).modules["model"]


def brain_for(server: ReplayServer, **settings):
    settings.setdefault("backoff_base", 0.05)
    return make_llm_brain(model="gpt-4o-mini", base_url=server.base_url, env=NOENV, **settings)


def fake_brief(description: str = "Handwritten digits 0-9, scanned; orientation matters.") -> Brief:
    profile = {
        "num_images": 400,
        "classes": 10,
        "image_size": {"median": [28, 28]},
        "channels": 1,
        "per_class": {str(i): 40 for i in range(10)},
    }
    info = {
        "num_classes": 10,
        "class_names": [str(i) for i in range(10)],
        "channels": 1,
        "image_size": [28, 28],
        "mean": [0.13],
        "std": [0.31],
        "num_train": 160,
    }
    return Brief(
        profile=profile,
        info=info,
        description=description,
        hardware=Hardware(cpu_cores=2, device="cpu", memory_gb=24.0),
        time_per_iter=45.0,
    )


@pytest.fixture(scope="module")
def digits(materialize, tmp_path_factory):
    """MNIST, 20 images per class per split, prepared for the sandbox once; and a Brief made from it."""
    from automodel.hardware import detect
    from automodel.intake import load_dataset
    from automodel.sandbox.bundle import prepare_data

    ds = load_dataset(materialize("mnist", "imagefolder", 20))
    split = ds.split(seed=0)
    images = ds.decode()
    bundle = prepare_data(ds, split, images, tmp_path_factory.mktemp("bundle") / "data")
    brief = Brief(
        profile=ds.profile(),
        info=dict(bundle.info),
        description="handwritten digits",
        hardware=detect("cpu"),
        time_per_iter=3,
    )
    return bundle, brief


def run_pipeline(pipeline: Pipeline, folder: Path, bundle):
    from automodel.sandbox.iteration import RunConfig, run_iteration

    folder.mkdir(parents=True, exist_ok=True)
    for name, source in pipeline.as_dict().items():
        (folder / f"{name}.py").write_text(source)
    return run_iteration(folder, bundle, RunConfig(time_limit=3, threads=1))


# ---- the Architect


def test_architect_writes_a_pipeline_that_trains(digits, tmp_path):
    bundle, brief = digits
    with ReplayServer([{"role": "architect", "reply_file": str(SCRIPTS / "good_pipeline.md")}]) as server:
        brain = brain_for(server)
        pipeline = brain.architect(brief)
        assert len(server.requests) == 1, "the published method: ONE call for the whole pipeline"
    assert pipeline == GOOD
    calls = brain.take_calls()
    assert [c.role for c in calls] == ["architect"] and calls[0].reply == reply("good_pipeline.md")
    assert brain.take_calls() == []
    result = run_pipeline(pipeline, tmp_path / "iter", bundle)
    assert result.status == "ok", result.error
    # Accuracy after 3 s depends on the machine's load; benchmarks/ measures it. Here: it trained and was scored.
    assert result.curves.get("train/loss")
    assert result.val_accuracy == pytest.approx(accuracy(tmp_path / "iter" / "probs_val.npy", bundle.val_y), abs=1e-6)
    assert (tmp_path / "iter" / "model.pt").stat().st_size > 0


def test_architect_prompt_holds_what_the_method_requires():
    with ReplayServer([{"reply_file": str(SCRIPTS / "good_pipeline.md")}]) as server:
        brain_for(server).architect(fake_brief())
        system, user = [m["content"] for m in server.requests[0]["messages"]]
    assert system.startswith("ROLE: architect")
    for words in (
        "Project Architect",
        "Performance Analyst",
        "Data Engineer",
        "how to collaborate".capitalize(),  # profile
        "ConvNeXt",
        "EfficientNet",
        "ViT",
        "timm",
        "MixUp",
        "CutMix",
        "RandAugment",
        "TrivialAugment",
        "abel smoothing",
        "cosine",
        "OneCycle",
        "EMA",
        "autocast",
        "channels_last",
        "horizontal flip",
        "NO horizontal or vertical flips",
        "characters",
        "UPPER_CASE hyperparameters",
        "NO network",
    ):
        assert words.lower() in system.lower(), words
    for module in ("data", "model", "train"):
        assert interface_text(module).strip() in user, f"interfaces/{module}.py must be included verbatim"
    assert "Handwritten digits 0-9" in user and "2 CPU cores" in user and "45 seconds" in user
    assert '"per_class"' in user and "none, so train from scratch" in user
    assert "Measured speed" not in user  # no probe in this brief: nothing is made up


def test_the_architect_sizes_from_the_measured_throughput_and_knows_batched_augmentation():
    import dataclasses

    probe = {"images_per_second": {"16": 2900.0, "48": 610.0}, "input_size": 28, "stages": 3, "batch_size": 128}
    with ReplayServer([{"reply_file": str(SCRIPTS / "good_pipeline.md")}]) as server:
        brain_for(server).architect(dataclasses.replace(fake_brief(), throughput=probe))
        system, user = [m["content"] for m in server.requests[0]["messages"]]
    # 160 training images, 45 s: 2900 * 45 / 160 = 815.6 epochs at WIDTH 16.
    assert ("Measured speed on this machine, now: a reference CNN (a stem of WIDTH channels, then 3 conv-BN stages "
            "doubling it, batch "
            "128, at 28 px) trains 2,900 training images/s at WIDTH 16 (about 815.6 epochs of the 160 training "
            "images in 45 s); 610 training images/s at WIDTH 48 (about 171.6 epochs") in user
    assert "build_batch_transforms" in system and "torch.where" in system
    assert "bfloat16" not in user.split("Measured speed")[1].split("\n")[0]  # this probe measured float32

    with ReplayServer([{"reply_file": str(SCRIPTS / "good_pipeline.md")}]) as server:
        fast = {**probe, "precision": "bf16", "bf16_images_per_second": {"16": 4930.0}}
        brain_for(server).architect(dataclasses.replace(fake_brief(), throughput=fast))
        system, user = [m["content"] for m in server.requests[0]["messages"]]
    assert ("(about 171.6 epochs of the 160 training images in 45 s). In bfloat16 autocast it trained 1.7x faster "
            "than these float32 figures at WIDTH 16: this CPU has bf16 matrix units, so use autocast") in user
    assert 'torch.autocast(device_type="cpu", dtype=torch.bfloat16)' in system


def test_the_architect_knows_the_final_refit_only_when_the_search_has_one():
    import dataclasses

    with ReplayServer([{"reply_file": str(SCRIPTS / "good_pipeline.md")}] * 2) as server:
        brain = brain_for(server)
        brain.architect(dataclasses.replace(fake_brief(), final_seconds=345.4))
        brain.architect(fake_brief())  # the greedy search: no final refit
        with_refit, without = (r["messages"][1]["content"] for r in server.requests)
    assert ("retrained once, for at least 345 seconds on all labelled images (training plus validation)"
            in with_refit)
    assert "Time budget: 45 seconds of training per iteration" in with_refit
    assert "are a screen" not in without and "retrained once" not in without and "Time budget: 45 seconds" in without


def test_prose_around_the_code_is_stripped():
    chatty = (
        "Great question! Let me think about the dataset first.\n\nFor the data side:\n```python\n" + GOOD.data + "```\n"
        "Now the network, which adapts to the input size.\n```python\n" + GOOD.model + "```\n"
        "And the training loop; it respects the time budget.\n```python\n" + GOOD.train + "```\n"
        "I hope this helps! Feel free to ask for changes."
    )
    with ReplayServer([{"reply": chatty}]) as server:
        assert brain_for(server).architect(fake_brief()) == GOOD
        assert len(server.requests) == 1


def test_truncated_reply_is_requested_again_once_with_a_note():
    with ReplayServer(
        [
            {"reply_file": str(SCRIPTS / "good_pipeline.md"), "truncate": 1800},
            {"reply_file": str(SCRIPTS / "good_pipeline.md")},
        ]
    ) as server:
        brain = brain_for(server)
        pipeline = brain.architect(fake_brief())
        again = server.requests[1]["messages"]
    assert pipeline == GOOD
    assert again[-2]["role"] == "assistant" and len(again[-2]["content"]) == 1800
    assert "cut off" in again[-1]["content"] and "data.py, model.py, train.py" in again[-1]["content"]
    assert [c.finish_reason for c in brain.take_calls()] == ["length", "stop"]


def test_a_module_missing_after_the_rerequest_is_a_brain_error():
    only_data = "### data.py\n```python\n" + GOOD.data + "```\n"
    with ReplayServer([{"reply": only_data}]) as server:  # the same incomplete reply, repeated
        brain = brain_for(server)
        with pytest.raises(BrainError) as err:
            brain.architect(fake_brief())
        assert len(server.requests) == 2
    assert "model.py, train.py" in str(err.value)
    assert len(brain.take_calls()) == 2, "failed calls are still handed over for saving"


def test_sequential_init_writes_one_module_per_call_each_seeing_the_previous():
    replies = [f"### {m}.py\n```python\n{GOOD.module(m)}```\n" for m in ("data", "model", "train")]
    with ReplayServer([{"role": "architect", "reply": r} for r in replies]) as server:
        brain = brain_for(server, init="sequential")
        pipeline = brain.architect(fake_brief())
        users = [r["messages"][1]["content"] for r in server.requests]
    assert pipeline == GOOD and len(users) == 3
    assert "Write data.py now" in users[0] and GOOD.data.strip() not in users[0]
    assert "Write model.py now" in users[1] and GOOD.data.strip() in users[1]
    assert "Write train.py now" in users[2] and GOOD.data.strip() in users[2] and GOOD.model.strip() in users[2]
    assert interface_text("train").strip() in users[2] and interface_text("data").strip() not in users[2]


# ---- the engineers: repairs of real failures reported by the real harness


def test_syntax_error_is_repaired_by_the_engineer_on_the_next_call(digits, tmp_path):
    bundle, brief = digits
    script = [{"role": "model_engineer", "reply_file": str(SCRIPTS / "model_syntax_error.md")}] * 2 + [
        {"role": "model_engineer", "reply_file": str(SCRIPTS / "model_wider.md")}
    ]
    decision = Decision(target="model", instruction="Set WIDTH from 24 to 32.", reason="under-fitting")
    with ReplayServer(script) as server:
        brain = brain_for(server)
        brain.brief = brief
        broken = GOOD.with_module("model", brain.engineer("model", GOOD, decision))
        assert len(server.requests) == 2, "a reply that does not parse is re-asked once"
        assert "does not parse" in server.requests[1]["messages"][-1]["content"]
        failed = run_pipeline(broken, tmp_path / "a1", bundle)
        assert failed.status == "contract_error" and failed.error.module == "model"
        fixed = brain.engineer("model", broken, decision, error=failed.error.text())
        repair_prompt = server.requests[2]["messages"][1]["content"]
    assert fixed == WIDER_MODEL
    assert failed.error.message in repair_prompt and "def build_model(info)\n" in repair_prompt
    assert server.requests[2]["messages"][0]["content"].startswith("ROLE: model_engineer")
    assert run_pipeline(GOOD.with_module("model", fixed), tmp_path / "a2", bundle).status == "ok"


def test_module_breaking_its_contract_is_repaired_from_the_harness_message(digits, tmp_path):
    bundle, brief = digits
    script = [
        {"role": "model_engineer", "reply_file": str(SCRIPTS / "model_wrong_classes.md")},
        {"role": "model_engineer", "reply_file": str(SCRIPTS / "model_wider.md")},
    ]
    decision = Decision(target="model", instruction="Use a standard classifier head.", reason="try")
    with ReplayServer(script) as server:
        brain = brain_for(server)
        wrong = GOOD.with_module("model", brain.engineer("model", GOOD, decision))
        assert len(server.requests) == 1, "it parses: the brain cannot see the contract break, the harness must"
        failed = run_pipeline(wrong, tmp_path / "a1", bundle)
        assert failed.status == "contract_error" and failed.error.module == "model"
        assert "info.num_classes" in failed.error.message
        fixed = brain.engineer("model", wrong, decision, error=failed.error.text())
        assert failed.error.message in server.requests[1]["messages"][1]["content"]
    assert run_pipeline(GOOD.with_module("model", fixed), tmp_path / "a2", bundle).status == "ok"


def test_engineer_sees_the_whole_pipeline_but_rewrites_only_its_module():
    both = (
        "### model.py\n```python\n"
        + WIDER_MODEL
        + "```\n### train.py\n```python\n# train.py\nLR = 1\n\ndef train(model, data, ctx):\n    return model\n```\n"
    )
    decision = Decision(target="model", instruction="Set WIDTH from 24 to 32.", reason="under-fitting")
    with ReplayServer([{"reply": both}]) as server:
        new = brain_for(server).engineer("model", GOOD, decision)
        system, user = [m["content"] for m in server.requests[0]["messages"]]
    assert new == WIDER_MODEL
    assert "Model Engineer" in system and "model.py and nothing else" in system
    assert all(GOOD.module(m).strip() in user for m in ("data", "model", "train"))
    assert interface_text("model").strip() in user and interface_text("train").strip() not in user
    assert "Set WIDTH from 24 to 32." in user and "under-fitting" in user


def test_repair_of_the_first_pipeline_needs_no_decision():
    with ReplayServer([{"reply_file": str(SCRIPTS / "model_wider.md")}]) as server:
        assert brain_for(server).engineer("model", GOOD, None, error="model.py failed: boom") == WIDER_MODEL
        assert "only repair it" in server.requests[0]["messages"][1]["content"]


# ---- the Analyst

DECISION = ('{"target": "train", "instruction": "Add an EMA of the weights with decay 0.999.", '
            '"reason": "noisy end of training"}')


def test_analyst_json_in_prose_and_fence_needs_no_retry():
    with ReplayServer([{"reply": f"The curve is noisy.\n```json\n{DECISION}\n```\nGood luck!"}]) as server:
        d = brain_for(server).analyst(History.from_json({"best": {"val_accuracy": 0.9}}))
        assert len(server.requests) == 1
    assert d == Decision("train", "Add an EMA of the weights with decay 0.999.", "noisy end of training")


def test_analyst_broken_json_is_retried_with_the_parse_error():
    with ReplayServer(
        [
            {"role": "analyst", "reply": "{'target': 'train', 'instruction': 'EMA' 'reason': oops"},
            {"role": "analyst", "reply": DECISION},
        ]
    ) as server:
        brain = brain_for(server)
        d = brain.analyst(History.from_json({"best": None}))
        note = server.requests[1]["messages"][-1]["content"]
    assert d.target == "train" and "EMA" in d.instruction
    assert "could not be used" in note and '"target"' in note
    assert [c.role for c in brain.take_calls()] == ["analyst", "analyst"]


def test_analyst_broken_twice_falls_back_to_a_clear_failure():
    with ReplayServer([{"reply": "Let's use a bigger model!"}]) as server:
        brain = brain_for(server)
        with pytest.raises(BrainError) as err:
            brain.analyst(History.from_json({"best": None}))
        assert len(server.requests) == 2
    assert "no usable decision in 2 replies" in str(err.value) and "no JSON object found" in str(err.value)
    assert [c.reply for c in brain.take_calls()] == ["Let's use a bigger model!"] * 2


def _long_run(tmp_path: Path, iterations: int):
    """A run directory with `iterations` journal records, as the lead's loop writes them."""
    from automodel.files import atomic_write_json
    from automodel.search.workspace import RunDir

    run = RunDir.create(tmp_path, f"run{iterations}", {"config": {}})
    for n in range(1, iterations + 1):
        d = run.fresh_iter_dir(n)
        for m in ("data", "model", "train"):
            (d / f"{m}.py").write_text(GOOD.module(m))
        ok = n % 3 != 0
        acc = 0.5 + n / (2 * iterations)
        atomic_write_json(
            d / "metrics.json", {"curves": {"train/loss": [[s, 2.0 / (s + 1)] for s in range(0, 3000, 10)]}}
        )
        atomic_write_json(
            d / "summary.json",
            {m: {"methods": "x" * 300, "hparams": {"LR": 0.001}} for m in ("data", "model", "train")},
        )
        run.append(
            JournalRecord.from_json(
                {
                    "iteration": n,
                    "final": True,
                    "parent": max(1, n - 1) if n > 1 else None,
                    "target": ("data", "model", "train")[n % 3],
                    "instruction": f"change number {n}: " + "try something elaborate " * 30,
                    "reason": "because " * 40,
                    "decision_key": f"k{n}",
                    "status": "ok" if ok else "failed",
                    "accepted": ok,
                    "val_accuracy": acc if ok else None,
                    "train_accuracy": acc + 0.05 if ok else None,
                    "error": None
                    if ok
                    else {"phase": "train", "module": "train", "type": f"Error{n % 4}", "message": "Traceback " * 200},
                }
            )
        )
    return run


def test_analyst_prompt_stays_bounded_over_a_60_iteration_run(tmp_path):
    from automodel.search.history import build_history

    sizes = {}
    with ReplayServer([{"reply": DECISION}]) as server:
        brain = brain_for(server, history_chars=8000)
        for n in (5, 60):
            history = build_history(_long_run(tmp_path, n), {"num_classes": 10}, {"iterations_done": n})
            brain.analyst(history)
            sizes[n] = sum(len(m["content"]) for m in server.requests[-1]["messages"])
        # Whatever the caller passes, the rendered history has a hard cap.
        huge = [{"iteration": i, "instruction": "x" * 2000, "summary": {"data": "y" * 3000}} for i in range(60)]
        brain.analyst(History.from_json({"recent": huge}))
        sizes["raw"] = sum(len(m["content"]) for m in server.requests[-1]["messages"])
        last_user = server.requests[-1]["messages"][1]["content"]
    system_size = len(server.requests[-1]["messages"][0]["content"])
    limit = system_size + 8000 + 1500  # template text around the history is small and fixed
    assert sizes[60] <= limit and sizes["raw"] <= limit, sizes
    assert sizes[60] < sizes[5] * 2, f"60 iterations must not cost much more prompt than 5: {sizes}"
    assert '"iteration": 59' in last_user, "the newest attempts are the ones kept"


# ---- the Summarizer


def test_summaries_use_the_llm_once_per_module_version_and_fall_back_without_it():
    summary = (
        '{"data": "pad-crop 2, no flips", "model": "2 residual blocks w24", "train": "AdamW cosine, smoothing 0.1"}'
    )
    with ReplayServer(
        [
            {"role": "summarizer", "reply": summary},
            {"role": "summarizer", "reply": '{"model": "2 residual blocks w32"}'},
            {"role": "summarizer", "reply": "sorry, I cannot"},
        ],
    ) as server:
        brain = brain_for(server)
        first = brain.summarize(GOOD, {"status": "ok", "val_accuracy": 0.9, "test_accuracy": 0.8})
        wider = GOOD.with_module("model", WIDER_MODEL)
        second = brain.summarize(wider, {"status": "ok", "val_accuracy": 0.91})
        asked = server.requests[1]["messages"][1]["content"]
        third = brain.summarize(
            wider.with_module("train", GOOD.train.replace("LR = 3e-3", "LR = 1e-3")),
            {"status": "failed", "error": {"type": "RuntimeError", "module": "train", "message": "boom"}},
        )
    assert first["data"]["methods"] == "pad-crop 2, no flips" and first["model"]["hparams"] == {
        "WIDTH": 24,
        "DROPOUT": 0.1,
    }
    assert "test_accuracy" not in json.dumps(first), "test scores never reach an agent"
    assert "model.py" in asked and "data.py" not in asked, "only the changed module is summarized again"
    assert second["model"]["methods"] == "2 residual blocks w32" and second["data"]["methods"] == "pad-crop 2, no flips"
    assert third["train"]["summarized_by"] == "keyword scan" and "AdamW" in third["train"]["methods"]
    assert third["train"]["hparams"]["LR"] == 1e-3 and "RuntimeError in train.py" in third["result"]["error"]


def test_zero_shot_prompt_is_plain():
    from automodel.agents.llm.architect import zero_shot_messages

    system, user = [m["content"] for m in zero_shot_messages(10, (28, 28), 1)]
    assert system.startswith("ROLE: zero_shot")
    assert "10 classes of 28x28 grayscale images" in user and interface_text("train").strip() in user
    # The interfaces mention MixUp and the hyperparameter block themselves; nothing else may help.
    for expert in (
        "Expert knowledge",
        "ConvNeXt",
        "RandAugment",
        "Label smoothing ~0.1",
        "Performance Analyst",
        "profile",
        "Rules for every module",
        "CPU cores",
        "description",
    ):
        assert expert not in system + user, expert


def test_a_summary_stating_values_the_code_does_not_have_is_corrected_and_the_contradiction_recorded():
    from automodel.agents.llm.summary_check import check_summary

    text, wrong = check_summary("AdamW, lr=0.01, weight decay 5e-4, label smoothing 0.1, batch size: 256, cosine",
                                {"LR": 3e-3, "WEIGHT_DECAY": 5e-4, "LABEL_SMOOTHING": 0.05, "BATCH_SIZE": 128})
    assert text == "AdamW, lr=0.003, weight decay 5e-4, label smoothing 0.05, batch size: 128, cosine"
    assert [(c.name, c.stated, c.code) for c in wrong] == [("LR", 0.01, 3e-3), ("LABEL_SMOOTHING", 0.1, 0.05),
                                                           ("BATCH_SIZE", 256.0, 128)]
    lr = GOOD.train.split("LR = ", 1)[1].split()[0]
    reply = '{"data": "pad-crop", "model": "residual blocks of WIDTH 99", "train": "AdamW at lr 0.5, cosine"}'
    with ReplayServer([{"role": "summarizer", "reply": reply}]) as server:
        summary = brain_for(server).summarize(GOOD, {"status": "ok", "val_accuracy": 0.9})
    assert summary["model"]["methods"] == "residual blocks of WIDTH 24"
    assert summary["model"]["corrected"] == [{"name": "WIDTH", "stated": 99.0, "code": 24}]
    assert summary["train"]["methods"] == f"AdamW at lr {float(lr)!r}, cosine"
    assert summary["train"]["corrected"] == [{"name": "LR", "stated": 0.5, "code": float(lr)}]
    assert "corrected" not in summary["data"]
