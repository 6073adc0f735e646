"""The built-in Performance Analyst: a diagnosis from the numbers, then one proven move.

It reads the bounded history (automodel.search.history), decides which regime the
best pipeline is in, and proposes the first applicable move of that regime's
list that has not already been tried on the current best (moves rejected on an
earlier best come after all fresh ones):

- diverged:  validation or training accuracy near chance -> calmer optimisation
- overfit:   training accuracy well above validation -> regularise, augment
- underfit:  both low and close -> capacity, learning rate, less regularisation
- overran:   training was interrupted at the deadline -> make it cheaper
- plateau:   none of the above -> finer steps on the learning rate and friends

Each move edits UPPER_CASE hyperparameters of ONE module (see automodel.hparams),
so it works on any pipeline that exposes the knob, expert-written or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from automodel.agents.base import BrainExhausted
from automodel.core import MODULES, Decision, History

# Train minus validation accuracy above which we call it over-fitting. Training
# accuracy is the harness's prediction of training images in eval mode (the
# logged curve of augmented, mixed batches when that is missing, which
# understates the fit): a gap of a few points already means over-fitting.
OVERFIT_GAP = 0.03
FEW_EPOCHS = 10      # fewer passes over the data than this, with the loss still falling: time-limited
FIT_TRAIN = 0.9      # ...unless the training images are already fit this well
# Moves taken from one regime's list before the next list gets a turn: when the
# diagnosis is borderline, the second-best regime is tried early, not after
# every move of the first.
TURN = 2


class AnalystExhausted(BrainExhausted):
    """Every move the expert knows has been tried on the current best."""


@dataclass(frozen=True)
class Move:
    target: str                                              # module the move edits
    name: str                                                # short id, for the record
    propose: Callable[[dict, dict], dict[str, Any] | None]   # (hparams, facts) -> constant changes, or None
    says: Callable[[dict, dict], str]                        # (hparams, changes) -> instruction text


def _scale(key: str, factor: float, lo: float, hi: float, integer: bool = False, digits: int = 6):
    def propose(hp: dict, facts: dict):
        v = hp.get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            return None
        new = min(hi, max(lo, v * factor))
        new = int(round(new)) if integer else float(f"{new:.{digits}g}")
        return None if new == v else {key: new}
    return propose


def _set(key: str, value: Any, when: Callable[[Any, dict], bool] = lambda v, f: True):
    def propose(hp: dict, facts: dict):
        if key not in hp or hp[key] == value or not when(hp[key], facts):
            return None
        return {key: value}
    return propose


def _turn_on(key: str, value_fn: Callable[[dict, dict], Any], when: Callable[[dict], bool] = lambda f: True):
    """Set a knob that is off (0/False/None) to a value computed from the facts."""
    def propose(hp: dict, facts: dict):
        if key not in hp or hp[key] not in (0, 0.0, False, None) or not when(facts):
            return None
        return {key: value_fn(hp, facts)}
    return propose


def _text(template: str):
    def says(hp: dict, changes: dict) -> str:
        parts = [f"{k} {hp.get(k)!r} -> {v!r}" for k, v in changes.items()]
        return f"{template} ({', '.join(parts)})"
    return says


def _side(facts: dict) -> int:
    return int(facts.get("input_size") or min(facts.get("image_size") or [32]))


def _ema_decay(hp: dict, facts: dict) -> float:
    # Average over roughly the last tenth of training: short runs need a faster EMA.
    steps = facts.get("train_steps") or 1000
    return float(f"{min(0.9995, max(0.99, 1 - 10 / max(steps, 1))):.4g}")


MOVES: dict[str, list[Move]] = {
    "diverged": [
        Move(
            "train", "lower_lr", _scale("LR", 0.3, 1e-5, 10.0), _text("Training diverged: lower the peak learning rate")
        ),
        Move(
            "train",
            "grad_clip",
            _turn_on("GRAD_CLIP", lambda hp, f: 1.0),
            _text("Clip gradients to stabilise training"),
        ),
        Move(
            "train",
            "warmup",
            _set("WARMUP_FRACTION", 0.2, lambda v, f: isinstance(v, (int, float)) and v < 0.2),
            _text("Warm up longer"),
        ),
        Move(
            "train",
            "adamw",
            _set("OPTIMIZER", "adamw"),
            _text("Switch to AdamW, which is more forgiving of the learning rate"),
        ),
    ],
    "overran": [
        Move(
            "model",
            "narrower",
            _scale("WIDTH", 0.5, 8, 1024, integer=True),
            _text("Training was cut off at the deadline: halve the width so epochs finish"),
        ),
        Move(
            "train",
            "bigger_batch",
            _scale("BATCH_SIZE", 2, 8, 1024, integer=True),
            _text("Training was cut off at the deadline: larger batches for throughput"),
        ),
    ],
    "overfit": [
        Move(
            "data",
            "crop",
            _turn_on("CROP_PADDING", lambda hp, f: max(2, _side(f) // 8)),
            _text("Over-fitting: add random crops with padding"),
        ),
        Move(
            "data",
            "hflip",
            _set("HFLIP", True, lambda v, f: f.get("flips_allowed", False)),
            _text("Over-fitting: add random horizontal flips"),
        ),
        Move(
            "train",
            "label_smoothing",
            _set("LABEL_SMOOTHING", 0.1, lambda v, f: isinstance(v, (int, float)) and v < 0.1),
            _text("Over-fitting: smooth the labels"),
        ),
        # MixUp before Cutout: measured on the first small-cnn pipeline at 45 s (benchmarks/recipes.py),
        # MixUp 0.2 gained +4.5% val on CIFAR-10 and +0.6% test on Fashion-MNIST, Cutout +2% and -0.2%.
        Move(
            "data",
            "mixup",
            _turn_on("MIXUP_ALPHA", lambda hp, f: 0.2),
            _text("Over-fitting: MixUp the training batches"),
        ),
        Move(
            "data",
            "cutout",
            _turn_on("CUTOUT", lambda hp, f: max(4, _side(f) // 4)),
            _text("Over-fitting: erase a random square (Cutout)"),
        ),
        Move(
            "train",
            "ema",
            _turn_on("EMA_DECAY", _ema_decay),
            _text("Over-fitting and noisy end of training: predict with an EMA of the weights"),
        ),
        Move(
            "model",
            "dropout",
            _set("DROPOUT", 0.3, lambda v, f: isinstance(v, (int, float)) and v < 0.3),
            _text("Over-fitting: dropout before the classifier"),
        ),
        Move("train", "more_wd", _scale("WEIGHT_DECAY", 2.0, 1e-6, 0.2), _text("Over-fitting: stronger weight decay")),
        Move("data", "rrc", _set("RANDOM_RESIZED_CROP", True), _text("Over-fitting: random resized crops")),
        Move(
            "data",
            "jitter",
            _turn_on("COLOR_JITTER", lambda hp, f: 0.2, lambda f: f.get("channels") == 3),
            _text("Over-fitting: colour jitter"),
        ),
        Move(
            "data",
            "cutmix",
            _turn_on("CUTMIX_ALPHA", lambda hp, f: 1.0),
            _text("Over-fitting: CutMix the training batches"),
        ),
        Move(
            "data",
            "more_crop",
            _scale("CROP_PADDING", 1.5, 1, 16, integer=True),
            _text("Over-fitting: stronger random crops"),
        ),
        Move(
            "model",
            "narrower_reg",
            _scale("WIDTH", 0.75, 8, 1024, integer=True),
            _text("Over-fitting: a smaller network"),
        ),
    ],
    "underfit": [
        Move("model", "wider", _scale("WIDTH", 1.5, 8, 256, integer=True), _text("Under-fitting: widen the network")),
        Move("train", "higher_lr", _scale("LR", 2.0, 1e-5, 2.0), _text("Under-fitting: raise the peak learning rate")),
        Move(
            "train",
            "lower_lr",
            _scale("LR", 0.5, 1e-5, 2.0),
            _text("Under-fitting with a noisy loss: lower the peak learning rate"),
        ),
        Move("data", "less_cutout", _set("CUTOUT", 0, lambda v, f: bool(v)), _text("Under-fitting: drop Cutout")),
        Move("data", "less_mixup", _set("MIXUP_ALPHA", 0.0, lambda v, f: bool(v)), _text("Under-fitting: drop MixUp")),
        Move("data", "less_cutmix", _set("CUTMIX_ALPHA", 0.0, lambda v, f: bool(v)),
             _text("Under-fitting: drop CutMix")),
        Move(
            "train",
            "smaller_batch",
            _scale("BATCH_SIZE", 0.5, 16, 1024, integer=True),
            _text("Under-fitting: more, smaller steps"),
        ),
        Move(
            "model", "deeper", _scale("DEPTH", 2.0, 1, 4, integer=True), _text("Under-fitting: more blocks per stage")
        ),
        Move("train", "less_wd", _scale("WEIGHT_DECAY", 0.5, 1e-6, 0.2), _text("Under-fitting: weaker weight decay")),
    ],
    # Few epochs with a loss still falling: the run ran out of time before it could fit the data, so the
    # gap to validation says little. Make each epoch cheaper and each step count for more; regularisers
    # (MixUp, CutMix, Cutout, EMA) only slow it further. The final refit re-widens the network for its longer run.
    "timelimited": [
        Move("data", "less_mixup", _set("MIXUP_ALPHA", 0.0, lambda v, f: bool(v)),
             _text("Time-limited: drop MixUp so each step fits the labels")),
        Move("data", "less_cutmix", _set("CUTMIX_ALPHA", 0.0, lambda v, f: bool(v)),
             _text("Time-limited: drop CutMix so each step fits the labels")),
        Move("data", "less_cutout", _set("CUTOUT", 0, lambda v, f: bool(v)),
             _text("Time-limited: drop Cutout so each step fits the labels")),
        Move("train", "higher_lr", _scale("LR", 1.5, 1e-5, 2.0),
             _text("Time-limited: a higher peak learning rate to learn faster")),
        Move("model", "narrower_fast", _scale("WIDTH", 0.67, 8, 1024, integer=True),
             _text("Time-limited: a narrower network so more epochs fit")),
        Move("data", "lighter_crop", _scale("CROP_PADDING", 0.5, 0, 16, integer=True),
             _text("Time-limited: lighter random crops")),
        Move("train", "less_smoothing", _set("LABEL_SMOOTHING", 0.0, lambda v, f: bool(v)),
             _text("Time-limited: no label smoothing")),
    ],
    "plateau": [
        Move("train", "ema", _turn_on("EMA_DECAY", _ema_decay), _text("Plateau: predict with an EMA of the weights")),
        Move("train", "lr_up", _scale("LR", 1.4, 1e-5, 2.0), _text("Plateau: a somewhat higher learning rate")),
        Move("train", "lr_down", _scale("LR", 0.7, 1e-5, 2.0), _text("Plateau: a somewhat lower learning rate")),
        Move("model", "wider", _scale("WIDTH", 1.25, 8, 256, integer=True), _text("Plateau: a little more capacity")),
        Move("train", "wd_down", _scale("WEIGHT_DECAY", 0.5, 1e-6, 0.2), _text("Plateau: weaker weight decay")),
        Move("train", "wd_up", _scale("WEIGHT_DECAY", 2.0, 1e-6, 0.2), _text("Plateau: stronger weight decay")),
        Move("train", "swap_opt_sgd", _set("OPTIMIZER", "sgd"), _text("Plateau: try SGD with Nesterov momentum")),
        Move("train", "swap_opt_adamw", _set("OPTIMIZER", "adamw"), _text("Plateau: try AdamW")),
        Move(
            "train",
            "ls_up",
            _set("LABEL_SMOOTHING", 0.2, lambda v, f: isinstance(v, (int, float)) and v < 0.2),
            _text("Plateau: more label smoothing"),
        ),
    ],
}

NOUNS = {
    "diverged": "divergence",
    "overran": "running out of time",
    "overfit": "over-fitting",
    "underfit": "under-fitting",
    "plateau": "a plateau",
    "timelimited": "too few epochs",
}

# After its own list, each regime falls back on these, in this order.
FALLBACK = {
    "diverged": ["overran", "plateau"],
    "overran": ["plateau"],
    "overfit": ["plateau", "underfit"],
    "underfit": ["plateau", "overfit"],
    "plateau": ["overfit", "underfit"],
    "timelimited": ["underfit", "plateau"],
}


def _decision(move: Move, hp: dict, facts: dict, why: str, group: str, regime: str) -> Decision | None:
    changes = move.propose(hp[move.target], facts)
    if not changes:
        return None
    return Decision(
        target=move.target,
        instruction=move.says(hp[move.target], changes),
        reason=why + ("" if group == regime else f"; also trying a move against {NOUNS[group]}"),
        edit={"set": changes, "move": move.name},
    )


def _ordered(groups: list[str], hp: dict, facts: dict, why: str, regime: str) -> list[Decision]:
    """Applicable moves in the order they are proposed: TURN of each group in turn.

    The order depends only on the parent's hyperparameters, so skipping the
    moves already tried on that parent always yields the next one."""
    lists = [[d for m in MOVES[g] if (d := _decision(m, hp, facts, why, g, regime))] for g in groups]
    seen: set[str] = set()
    ordered: list[Decision] = []
    while any(lists):
        for moves in lists:
            taken = 0
            while moves and taken < TURN:
                d = moves.pop(0)
                if d.key() not in seen:  # a move listed in two groups is proposed once
                    seen.add(d.key())
                    ordered.append(d)
                    taken += 1
    return ordered


def diagnose(best: dict, chance: float) -> tuple[str, str]:
    """Return (regime, reason in plain words, with the epochs the budget bought when known)."""
    regime, why = _regime(best, chance)
    compute = best.get("compute") or {}
    if compute.get("epochs") is not None and compute.get("images_per_second"):
        why += f" ({compute['epochs']:.1f} epochs at {compute['images_per_second']:,.0f} images/s)"
    return regime, why


def _regime(best: dict, chance: float) -> tuple[str, str]:
    val = best.get("val_accuracy") or 0.0
    train = best.get("train_accuracy")
    # "Near chance": half again chance with many classes, but at most 10 points above it, so
    # 0.69 on a two-class task (chance 0.5) is a model that learns, not a diverged one.
    near_chance = min(1.0, chance * 1.5, chance + 0.1)
    if val < near_chance or (train is not None and train < near_chance):
        return (
            "diverged",
            f"validation accuracy {val:.3f} is near chance ({chance:.3f}): the optimisation is not learning",
        )
    if best.get("interrupted"):
        return "overran", "training ignored or missed its deadline and was interrupted"
    if train is None:
        return "plateau", f"no training curve was logged; validation accuracy is {val:.3f}"
    gap = train - val
    epochs = (best.get("compute") or {}).get("epochs")
    if epochs is not None and epochs < FEW_EPOCHS and train < FIT_TRAIN and _still_falling(best):
        return "timelimited", (f"only {epochs:.1f} epochs fit in the time and the training loss is still falling "
                               f"(training accuracy {train:.3f}, validation {val:.3f}): time-limited, not "
                               f"over-fitting")
    if gap > OVERFIT_GAP:
        return "overfit", f"training accuracy {train:.3f} is {gap:.3f} above validation {val:.3f}: over-fitting"
    if train < 0.97:
        return "underfit", f"training accuracy {train:.3f} is close to validation {val:.3f} and low: under-fitting"
    return "plateau", f"training accuracy {train:.3f} and validation {val:.3f} are both high and close"


def _still_falling(best: dict) -> bool:
    """Whether the training loss fell from the third quarter of the run to the last (True when no curve
    says otherwise). Each logged point is one batch's loss, which swings by 5-10% from batch to batch, so
    the quarters are compared by their means: the last two points alone misread a CIFAR-10 run still
    learning at 6 epochs (1.19 then 1.21 at the end of a curve falling from 2.36) as converged."""
    losses = [point[1] for point in ((best.get("curves") or {}).get("train/loss")) or []]
    if len(losses) < 4:
        return True
    quarter = max(1, len(losses) // 4)
    late = sum(losses[-quarter:]) / quarter
    earlier = sum(losses[-2 * quarter:-quarter]) / quarter
    return late < earlier * 0.97


def merged_hparams(summary: dict) -> dict[str, dict]:
    return {m: dict((summary.get(m) or {}).get("hparams") or {}) for m in MODULES}


def facts_from(history: History, flips_allowed: bool = False) -> dict:
    ds = history.dataset
    best = history.best or {}
    hp = merged_hparams(best.get("summary") or {})
    return {
        "flips_allowed": flips_allowed,
        "channels": ds.get("channels"),
        "image_size": ds.get("image_size"),
        "input_size": hp["data"].get("INPUT_SIZE"),
        "train_steps": best.get("train_steps"),
    }


def decide(history: History, flips_allowed: bool = False) -> Decision:
    """The next move; `flips_allowed` is the Architect's judgment of the task (no flips for digits, text, ...)."""
    best = history.best
    if best is None:
        return _without_best(history)
    regime, why = diagnose(best, history.chance_accuracy)
    hp = merged_hparams(best.get("summary") or {})
    facts = facts_from(history, flips_allowed)
    tried = history.tried_keys()
    earlier = {t.get("key") for t in history.rejected_on_earlier_best}
    candidates = [d for d in _ordered([regime] + FALLBACK[regime], hp, facts, why, regime) if d.key() not in tried]
    # Moves that already failed on an earlier best go last: fresh ones first.
    candidates.sort(key=lambda d: d.key() in earlier)
    if candidates:
        return candidates[0]
    raise AnalystExhausted(
        "The built-in expert has tried every move it knows on the current best pipeline; stopping early. "
        "Use --agent llm for open-ended edits, or edit best/ by hand."
    )


def _without_best(history: History) -> Decision:
    """No iteration has succeeded yet: make the last failed pipeline cheaper and calmer."""
    failures = history.failures
    cause = failures[-1]["cause"] if failures else "unknown failure"
    tried = history.tried_keys()
    candidates = [
        Decision(
            "model",
            "Nothing has trained successfully yet: halve the width",
            f"every attempt failed ({cause})",
            {"set_scale": {"WIDTH": 0.5}, "move": "rescue_narrower"},
        ),
        Decision(
            "train",
            "Nothing has trained successfully yet: halve the batch size and the learning rate",
            f"every attempt failed ({cause})",
            {"set_scale": {"BATCH_SIZE": 0.5, "LR": 0.5}, "move": "rescue_batch"},
        ),
    ]
    for d in candidates:
        if d.key() not in tried:
            return d
    raise AnalystExhausted(
        f"No pipeline has trained successfully ({cause}) and the built-in expert has no rescue left. "
        "Look at the last iteration's stderr.txt and metrics.json in the run directory."
    )
