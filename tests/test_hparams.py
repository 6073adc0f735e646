"""The UPPER_CASE hyperparameter block: read faithfully, edited surgically."""

import ast

import pytest

from automodel.hparams import HParamError, hparam_comments, read_hparams, set_hparams

SOURCE = '''"""A training module."""
import torch

BATCH_SIZE = 128        # images per step
LR = 0.05               # peak learning rate
OPTIMIZER = "sgd"       # "sgd" or "adamw"
EMA_DECAY = 0           # 0 = off
BETAS: tuple = (0.9, 0.999)  # adam betas
STEPS = BATCH_SIZE * 2  # computed, not a literal
lowercase = 3


def train(model, data, ctx):
    LR = 1  # a local, not the module constant
    return model
'''


def test_read_keeps_literals_only():
    hp = read_hparams(SOURCE)
    assert hp == {"BATCH_SIZE": 128, "LR": 0.05, "OPTIMIZER": "sgd", "EMA_DECAY": 0, "BETAS": (0.9, 0.999)}
    assert hparam_comments(SOURCE)["LR"] == "peak learning rate"


def test_set_changes_only_values_and_keeps_comments():
    out = set_hparams(SOURCE, {"LR": 0.1, "OPTIMIZER": "adamw", "EMA_DECAY": 0.999})
    assert read_hparams(out)["LR"] == 0.1 and read_hparams(out)["OPTIMIZER"] == "adamw"
    assert "LR = 0.1               # peak learning rate" in out
    changed = [(a, b) for a, b in zip(SOURCE.splitlines(), out.splitlines()) if a != b]
    assert len(changed) == 3 and len(SOURCE.splitlines()) == len(out.splitlines())
    ast.parse(out)
    assert "    LR = 1  # a local" in out  # the function body is untouched


def test_set_missing_constant_is_an_error():
    with pytest.raises(HParamError, match="WIDTH"):
        set_hparams(SOURCE, {"WIDTH": 64})


def test_unparsable_source():
    assert read_hparams("def broken(:\n") == {}
    with pytest.raises(HParamError):
        set_hparams("def broken(:\n", {"LR": 1})
