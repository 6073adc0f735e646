"""Static contract checks (automodel.sandbox.contracts): fast, parent-side, precise messages."""

from pathlib import Path

import pytest

from automodel.sandbox import contracts

REPO = Path(__file__).resolve().parents[1]
HOSTILE = Path(__file__).resolve().parent / "hostile"


def test_reference_pipeline_passes():
    assert contracts.check_pipeline_dir(REPO / "pipelines" / "reference") == []


def test_syntax_error_names_file_line_and_text():
    issues = contracts.check_source("data", (HOSTILE / "data_syntax_error.py").read_text())
    assert len(issues) == 1
    issue = issues[0]
    assert (issue.module, issue.kind, issue.line) == ("data", "syntax", 8)
    assert issue.text == "def build_transforms(info)"
    assert "data.py" in issue.message and "line 8" in issue.message and "def build_transforms(info)" in issue.message


def test_wrong_arity_names_function_and_the_fix():
    issues = contracts.check_source("train", (HOSTILE / "train_wrong_signature.py").read_text())
    assert [i.kind for i in issues] == ["signature"]
    msg = issues[0].message
    assert "train.py" in msg and "def train(model, data)" in msg and "train(model, data, ctx)" in msg
    assert issues[0].line == 6


@pytest.mark.parametrize("source, kind", [
    ("def build_model():\n    pass\n", "signature"),                       # too few parameters
    ("def build_model(info, extra):\n    pass\n", "signature"),            # a required extra parameter
    ("def build_model(info, *, width):\n    pass\n", "signature"),         # required keyword-only
    ("async def build_model(info):\n    pass\n", "signature"),
    ("class build_model:\n    pass\n", "signature"),
    ("def make_model(info):\n    pass\n", "missing_function"),
    ("class M:\n    def build_model(self, info):\n        pass\n", "missing_function"),  # not top level
])
def test_model_contract_violations(source, kind):
    issues = contracts.check_source("model", source)
    assert [i.kind for i in issues] == [kind]
    assert issues[0].module == "model" and "build_model(info)" in issues[0].message


@pytest.mark.parametrize("source", [
    "def build_model(info, width=32):\n    pass\n",      # extra parameters with defaults are fine
    "def build_model(*args):\n    pass\n",
    "from somewhere import build_model\n",               # checked at run time in the sandbox
    "build_model = lambda info: None\n",
])
def test_compatible_definitions_pass(source):
    assert contracts.check_source("model", source) == []


def test_optional_mix_batch_is_checked_only_when_defined():
    ok = "def build_transforms(info):\n    pass\n"
    assert contracts.check_source("data", ok) == []
    bad = ok + "def mix_batch(images, targets):\n    pass\n"
    issues = contracts.check_source("data", bad)
    assert [i.kind for i in issues] == ["signature"] and "mix_batch(images, targets, info)" in issues[0].message


def test_missing_file_is_reported(tmp_path):
    (tmp_path / "data.py").write_text("def build_transforms(info):\n    pass\n")
    (tmp_path / "model.py").write_text("def build_model(info):\n    pass\n")
    issues = contracts.check_pipeline_dir(tmp_path)
    assert [(i.module, i.kind) for i in issues] == [("train", "missing_file")]


def test_check_sources_matches_files():
    sources = {m: (REPO / "pipelines" / "reference" / f"{m}.py").read_text() for m in contracts.MODULES}
    assert contracts.check_sources(sources) == []
    sources["train"] = "def train(model, data, ctx)\n    return model\n"
    assert [i.kind for i in contracts.check_sources(sources)] == ["syntax"]


def test_missing_module_hint_lists_what_is_installed():
    # The hint is added inside the sandbox (sandbox_child.py) to any ModuleNotFoundError of generated code.
    from automodel.sandbox.child import missing_module_hint

    hint = missing_module_hint(ModuleNotFoundError("No module named 'torch.nosuchthing'", name="torch.nosuchthing"))
    assert "torch itself is installed, but has no module torch.nosuchthing" in hint
    assert "torch, torchvision" in hint and "no network access" in hint
    plain = missing_module_hint(ModuleNotFoundError("No module named 'notapackage_xyz'", name="notapackage_xyz"))
    assert "itself is installed" not in plain and plain.startswith(". Generated code can import torch")
