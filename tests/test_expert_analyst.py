"""The built-in Analyst diagnoses from the numbers and never repeats a rejected edit."""

import pytest

from automodel.agents.expert.analyst import AnalystExhausted, decide, diagnose
from automodel.agents.expert.engineers import CannotRepair, apply_edit, repair
from automodel.core import Decision, History, Pipeline
from automodel.hparams import read_hparams

DATA = ("CROP_PADDING = 0  # px\nHFLIP = False  # flips\nCUTOUT = 0  # px\nMIXUP_ALPHA = 0.0  # off\n"
        "INPUT_SIZE = 28  # px\n")
MODEL = "ARCH = 'convnet'  # variant\nWIDTH = 32  # channels\nDEPTH = 1  # blocks\nDROPOUT = 0.0  # p\n"
TRAIN = (
    "BATCH_SIZE = 128  # images\nOPTIMIZER = 'sgd'  # opt\nLR = 0.05  # peak\nWEIGHT_DECAY = 5e-4  # wd\n"
    "LABEL_SMOOTHING = 0.0  # ls\nEMA_DECAY = 0  # off\nGRAD_CLIP = 0  # off\nWARMUP_FRACTION = 0.1  # frac\n"
)


def history(val, train, tried=(), interrupted=False):
    summary = {m: {"hparams": read_hparams(src)} for m, src in (("data", DATA), ("model", MODEL), ("train", TRAIN))}
    return History.from_json(
        {
            "dataset": {"num_classes": 10, "channels": 1, "image_size": [28, 28]},
            "best": {
                "iteration": 3,
                "val_accuracy": val,
                "train_accuracy": train,
                "interrupted": interrupted,
                "summary": summary,
                "train_steps": 400,
            },
            "tried_on_best": [{"key": k} for k in tried],
            "chance_accuracy": 0.1,
            "parent_iteration": 3,
        }
    )


@pytest.mark.parametrize(
    "val,train,regime",
    [
        (0.11, 0.12, "diverged"),
        (0.80, 0.99, "overfit"),
        (0.70, 0.72, "underfit"),
        (0.985, 0.99, "plateau"),
    ],
)
def test_diagnosis(val, train, regime):
    assert diagnose({"val_accuracy": val, "train_accuracy": train}, 0.1)[0] == regime


def test_two_classes_at_069_is_learning_not_diverged():
    # hymenoptera's first pipeline: val 0.694, training images 0.862, chance 0.5.
    assert diagnose({"val_accuracy": 0.694, "train_accuracy": 0.862}, 0.5)[0] == "overfit"
    assert diagnose({"val_accuracy": 0.55, "train_accuracy": 0.56}, 0.5)[0] == "diverged"


def test_overfitting_gets_regularisation_first():
    d = decide(history(0.80, 0.99))
    assert d.target == "data" and d.edit["set"] == {"CROP_PADDING": 3}
    assert "over-fitting" in d.reason


def test_underfitting_gets_capacity():
    d = decide(history(0.70, 0.72))
    assert d.target == "model" and d.edit["set"] == {"WIDTH": 48}


def test_divergence_lowers_lr():
    d = decide(history(0.1, 0.1))
    assert d.target == "train" and d.edit["set"] == {"LR": 0.015}


def test_never_flips_when_the_architect_ruled_them_out():
    seen = set()
    h = history(0.80, 0.99)
    for _ in range(40):
        try:
            d = decide(h, flips_allowed=False)
        except AnalystExhausted:
            break
        assert "HFLIP" not in (d.edit.get("set") or {})
        assert d.key() not in seen, "an edit already tried on this parent was proposed again"
        seen.add(d.key())
        h.tried_on_best.append({"key": d.key()})
    else:
        pytest.fail("the analyst never ran out of moves")
    assert len(seen) >= 10


def test_interrupted_training_is_made_cheaper():
    d = decide(history(0.8, 0.85, interrupted=True))
    assert d.target == "model" and d.edit["set"] == {"WIDTH": 16}


def test_engineer_applies_edit_and_repairs_resource_failures():
    p = Pipeline(DATA, MODEL, TRAIN)
    d = Decision("train", "raise lr", "because", {"set": {"LR": 0.1}})
    new = apply_edit("train", p, d)
    assert read_hparams(new)["LR"] == 0.1 and read_hparams(new)["BATCH_SIZE"] == 128
    fixed = repair("model", p, "status: timeout\nkilled at the time limit")
    assert read_hparams(fixed)["WIDTH"] == 16
    with pytest.raises(CannotRepair):
        repair("model", p, "NameError: name 'nn' is not defined")


def test_no_best_yet_rescues_cheaper():
    h = History.from_json({"best": None, "failures": [{"cause": "timeout in train"}], "tried_on_best": []})
    d = decide(h)
    assert d.edit["set_scale"] == {"WIDTH": 0.5}
    h.tried_on_best.append({"key": d.key()})
    assert decide(h).target == "train"
    h.tried_on_best.append({"key": decide(h).key()})
    with pytest.raises(AnalystExhausted):
        decide(h)


def test_other_regimes_get_a_turn_after_two_moves():
    h = history(0.80, 0.99)
    reasons = []
    for _ in range(4):
        d = decide(h, flips_allowed=True)
        reasons.append(d.reason)
        h.tried_on_best.append({"key": d.key()})
    assert "also trying" not in reasons[0] and "also trying" not in reasons[1]
    assert "also trying a move against a plateau" in reasons[2]


def test_moves_rejected_on_an_earlier_best_come_after_fresh_ones():
    h = history(0.80, 0.99)
    first = decide(h)
    h.rejected_on_earlier_best.append({"key": first.key()})
    second = decide(h)
    assert second.key() != first.key(), "a move that failed on an earlier best must not be the first proposal"
    # Once every fresh move has been tried on this parent, the earlier rejection gets its second chance.
    seen = []
    while True:
        try:
            d = decide(h)
        except AnalystExhausted:
            break
        seen.append(d.key())
        h.tried_on_best.append({"key": d.key()})
    assert seen[-1] == first.key() and seen.count(first.key()) == 1


def test_few_epochs_with_a_falling_loss_is_time_limited_not_overfit():
    # The CIFAR-10 case: 0.684 training accuracy after 4 epochs was read as over-fitting (gap 0.041).
    falling = [[s, 2.3 - 0.01 * s] for s in range(0, 200, 10)]
    best = {"val_accuracy": 0.643, "train_accuracy": 0.684, "compute": {"epochs": 4.2},
            "curves": {"train/loss": falling}}
    regime, why = diagnose(best, 0.1)
    assert regime == "timelimited" and "4.2 epochs" in why
    # The same scores after 40 epochs are over-fitting; a flat loss after 4 epochs is not time-limited.
    assert diagnose({**best, "compute": {"epochs": 40.0}}, 0.1)[0] == "overfit"
    flat = [[s, 1.0] for s in range(0, 200, 10)]
    assert diagnose({**best, "curves": {"train/loss": flat}}, 0.1)[0] == "overfit"
    # Batch losses are noisy: a CIFAR-10 run at 20 s (6.1 epochs, train 0.718, val 0.682) logged this curve,
    # whose last point is above the one at three quarters; it was read as over-fitting before.
    cifar = [2.36, 1.85, 1.78, 1.77, 1.67, 1.61, 1.58, 1.58, 1.47, 1.46, 1.45, 1.28, 1.51, 1.27, 1.19, 1.19,
             1.24, 1.17, 1.27, 1.21]
    seen = {"val_accuracy": 0.682, "train_accuracy": 0.718, "compute": {"epochs": 6.1},
            "curves": {"train/loss": [[20 * i, loss] for i, loss in enumerate(cifar)]}}
    assert diagnose(seen, 0.1)[0] == "timelimited"


def test_cutmix_is_dropped_when_the_run_cannot_fit_the_labels():
    """The photo recipe starts with CutMix; a run that under-fits or runs out of time can drop it."""
    def with_cutmix(val, train, epochs):
        h = history(val, train)
        summary = dict(h.best["summary"], data={"hparams": read_hparams(DATA + "CUTMIX_ALPHA = 1.0  # on\n")})
        best = dict(h.best, summary=summary, compute={"epochs": epochs})
        return History.from_json({**h.to_json(), "best": best})

    for h in (with_cutmix(0.643, 0.684, 4.0), with_cutmix(0.70, 0.72, 40.0)):
        moves = []
        for _ in range(8):
            d = decide(h)
            moves.append((d.edit["move"], d.edit["set"]))
            h.tried_on_best.append({"key": d.key()})
        assert ("less_cutmix", {"CUTMIX_ALPHA": 0.0}) in moves
    # Without CutMix there is nothing to drop.
    h = history(0.70, 0.72)
    for _ in range(8):
        d = decide(h)
        assert d.edit["move"] != "less_cutmix"
        h.tried_on_best.append({"key": d.key()})


def test_a_time_limited_run_gets_cheaper_faster_steps_not_regularisation():
    h = history(0.643, 0.684)
    best = dict(h.best, compute={"epochs": 4.0})
    d = decide(History.from_json({**h.to_json(), "best": best}))
    assert d.edit["move"] in ("higher_lr", "narrower_fast", "lighter_crop", "less_mixup", "less_cutout")
    assert "MIXUP_ALPHA" not in d.edit["set"] or d.edit["set"]["MIXUP_ALPHA"] == 0.0
