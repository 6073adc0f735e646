"""Reading code and decisions out of LLM replies the way models really write them."""

from pathlib import Path

import pytest

from automodel.agents.llm.decision import ReplyFormatError, parse_decision, parse_object
from automodel.agents.llm.extract import extract_modules, module_problem

SCRIPTS = Path(__file__).parent / "llm_scripts"

DATA = "import torch\n\nPAD = 2  # pixels\n\ndef build_transforms(info):\n    return (lambda x: x), (lambda x: x)\n"
MODEL = (
    "import torch\n\nWIDTH = 8  # channels\n\ndef build_model(info):\n    return torch.nn.Linear(1, info.num_classes)\n"
)
TRAIN = "LR = 0.1  # learning rate\n\ndef train(model, data, ctx):\n    return model\n"


def fenced(code: str, tag: str = "python") -> str:
    return f"```{tag}\n{code}```\n"


def test_good_pipeline_reply_splits_into_three_clean_modules():
    result = extract_modules((SCRIPTS / "good_pipeline.md").read_text())
    assert result.ok(("data", "model", "train")), result.problems
    assert "def build_transforms" in result.modules["data"] and "def build_model" in result.modules["model"]
    assert "def train" in result.modules["train"] and "```" not in "".join(result.modules.values())
    assert not any("The images are small" in m for m in result.modules.values()), "prose must not leak into code"


def test_file_markers_in_info_string_and_first_line_comment():
    reply = (
        f"```python # data.py\n{DATA}```\n"
        f"Then the network:\n```py\n# model.py: the network\n{MODEL}```\n"
        f"```Python3 title=train.py\n{TRAIN}```"
    )
    result = extract_modules(reply)
    assert result.ok(("data", "model", "train"))
    assert result.modules["model"].startswith("# model.py")
    assert result.modules["train"].strip() == TRAIN.strip()


def test_prose_names_the_file_and_other_languages_are_ignored():
    reply = (
        "Sure! First install nothing:\n```bash\npip install timm\n```\n"
        "Here is `data.py`, which normalises:\n"
        + fenced(DATA)
        + "**model.py** (uses what data.py produces):\n"
        + fenced(MODEL)
        + "And finally the loop, train.py:\n"
        + fenced(TRAIN)
        + "Let me know if you want changes to model.py or train.py!"
    )
    result = extract_modules(reply)
    assert result.ok(("data", "model", "train")), result.problems
    assert result.modules["model"].strip() == MODEL.strip()


def test_unlabelled_blocks_are_named_by_what_they_define():
    reply = "Three files:\n" + fenced(TRAIN) + fenced(DATA, "") + fenced(MODEL)
    result = extract_modules(reply)
    assert result.ok(("data", "model", "train"))
    assert "build_transforms" in result.modules["data"] and "def train" in result.modules["train"]


def test_label_contradicted_by_content_follows_the_content():
    reply = "### model.py\n" + fenced(DATA) + "### data.py\n" + fenced(MODEL) + "### train.py\n" + fenced(TRAIN)
    result = extract_modules(reply)
    assert "build_transforms" in result.modules["data"] and "build_model" in result.modules["model"]


def test_missing_fences_with_headings_and_stray_prose():
    reply = (
        "Here is the pipeline you asked for.\n\n### data.py\n"
        + DATA
        + "\nThis transform keeps things simple.\n\n### model.py\n"
        + MODEL
        + "\n### train.py\n"
        + TRAIN
        + "\nThat's all; it should train quickly.\n"
    )
    result = extract_modules(reply)
    assert result.ok(("data", "model", "train")), result.problems
    assert "keeps things simple" not in result.modules["data"]
    assert "That's all" not in result.modules["train"]


def test_single_block_holding_all_three_files_is_split_on_marker_comments():
    reply = (
        "```python\n# ===== data.py =====\n"
        + DATA
        + "\n# ===== model.py =====\n"
        + MODEL
        + "\n# ===== train.py =====\n"
        + TRAIN
        + "```\n"
    )
    result = extract_modules(reply)
    assert result.ok(("data", "model", "train")), result.problems
    assert "build_model" not in result.modules["data"] and "build_transforms" not in result.modules["model"]


def test_duplicated_blocks_take_the_last_complete_one():
    broken = "def build_model(info:\n    return None\n"
    better = MODEL.replace("WIDTH = 8", "WIDTH = 64")
    reply = (
        "### data.py\n"
        + fenced(DATA)
        + "### model.py\n"
        + fenced(MODEL)
        + "### train.py\n"
        + fenced(TRAIN)
        + "Wait, a wider model is better:\n### model.py\n"
        + fenced(better)
        + "Oops, one more try:\n### model.py\n"
        + fenced(broken)
    )
    result = extract_modules(reply)
    assert result.ok(("data", "model", "train"))
    assert "WIDTH = 64" in result.modules["model"], "the last complete model.py wins over a later broken one"


def test_missing_closing_fence_between_files_is_tolerated():
    reply = (
        "### data.py\n```python\n" + DATA + "### model.py\n```python\n" + MODEL + "```\n### train.py\n" + fenced(TRAIN)
    )
    result = extract_modules(reply)
    assert result.ok(("data", "model", "train")), result.problems
    assert "model.py" not in result.modules["data"] and module_problem("data", result.modules["data"]) is None


def test_truncated_reply_is_detected():
    cut = (
        "### data.py\n"
        + fenced(DATA)
        + "### model.py\n"
        + fenced(MODEL)
        + "### train.py\n```python\nLR = 0.1\n\ndef train(model, da"
    )
    result = extract_modules(cut)
    assert result.truncated and not result.ok(("data", "model", "train"))
    assert "train" in result.problems and "does not parse" in result.problems["train"]
    # finish_reason "length" counts as cut off even when every fence is closed
    assert extract_modules("### data.py\n" + fenced(DATA), ("data",), finish_reason="length").truncated


def test_missing_module_and_missing_function_are_reported():
    result = extract_modules("### data.py\n" + fenced(DATA) + "### model.py\n" + fenced("import torch\nWIDTH = 3\n"))
    assert result.problems["train"] == "train.py is missing from the reply"
    assert "build_model" in result.problems["model"]


def test_reasoning_sections_are_ignored():
    reply = "<think>Maybe ```python\ndef build_model(info): pass\n``` no...</think>\n### model.py\n" + fenced(MODEL)
    result = extract_modules(reply, ("model",))
    assert result.ok(("model",)) and "WIDTH = 8" in result.modules["model"]


def test_single_module_reply_with_one_unnamed_block():
    code = "import torch\nLR = 0.2  # lr\n\ndef helper():\n    return 1\n"
    result = extract_modules("Updated:\n" + fenced(code), ("train",))
    assert result.modules["train"].startswith("import torch")
    assert "train()" in result.problems["train"]  # no train() defined: reported, not silently accepted


def test_engineer_reply_rewriting_two_modules_keeps_only_its_own():
    reply = "### model.py\n" + fenced(MODEL) + "### train.py\n" + fenced(TRAIN)
    result = extract_modules(reply, ("train",))
    assert result.modules == {"train": TRAIN}


# ---- the Analyst's decision


def test_decision_in_a_json_fence_with_prose():
    reply = ('Looking at the curves, training is cut short.\n```json\n{"target": "train", "instruction": '
             '"Use a cosine schedule.", "reason": "loss still falling"}\n```\nHope this helps!')
    d = parse_decision(reply)
    assert (d.target, d.instruction, d.reason) == ("train", "Use a cosine schedule.", "loss still falling")


@pytest.mark.parametrize(
    "reply, target",
    [
        ('{"target": "Model Engineer", "instruction": "wider", "reason": "underfit"}', "model"),
        ("{'target': 'data.py', 'instruction': 'add flips', 'reason': 'overfit'}", "data"),
        ('I suggest {"target": "training", "instruction": "lower lr", "reason": "unstable",}', "train"),
        ('{"engineer": "data", "instructions": ["crop", "flip"], "rationale": "gap"}', "data"),
    ],
)
def test_decision_variants_are_normalised(reply, target):
    assert parse_decision(reply).target == target


@pytest.mark.parametrize(
    "reply, says",
    [
        ("I think we should add MixUp to the data.", "no JSON object"),
        ('{"target": "optimizer", "instruction": "x", "reason": "y"}', '"target" is'),
        ('{"instruction": "x"}', 'no "target"'),
        ('{"target": "train", "instruction": "", "reason": "y"}', '"instruction" is missing'),
        ('{"target": "train", "instruction": "use cosine", "reason": ', "not closed"),
    ],
)
def test_unusable_decisions_say_what_to_fix(reply, says):
    with pytest.raises(ReplyFormatError) as err:
        parse_decision(reply)
    assert says in str(err.value)


def test_parse_object_for_summaries():
    assert parse_object('Summary:\n```json\n{"data": "crop", "model": "cnn"}\n```') == {"data": "crop", "model": "cnn"}
