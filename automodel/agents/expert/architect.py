"""The built-in Project Architect: one complete pipeline from the facts about the task.

    pipeline = write_pipeline(brief)        # Pipeline(data=..., model=..., train=...)

It reads the dataset profile, the description, the hardware and the time per
iteration (task.read_task), picks a recipe (recipes.choose_recipe) and
renders templates/pipelines/{data,model,train}.py.j2 with it. The recipes:

- small-cnn          28-64 px images (MNIST, CIFAR, ...): a pool-first CNN
                     trained from scratch, width sized to the CPU and budget;
- photo-cnn          larger photos on a CPU without cached weights: the same
                     kind of CNN (4 stages, residual) at 64-96 px;
- photo-timm         larger photos on a GPU without weights: timm resnet26d;
- photo-pretrained   cached timm weights listed in brief.pretrained_cache:
                     fine-tune that backbone at 96-128 px.

Every tunable knob is a top-level literal constant in the module that uses it
(automodel.hparams edits them by value; the code reads them at call time, so
no other edit is ever needed). What each does, for whoever tunes them:

data.py
  INPUT_SIZE           px side the model sees. Lower = quadratically faster
                       epochs (more epochs in the budget), less detail.
  CROP_PADDING         px of reflect padding before a random crop (translation
                       augmentation). About side/8 is standard; side/6 is
                       stronger; 0 turns it off. With RANDOM_RESIZED_CROP it
                       still applies, after the box crop.
  RANDOM_RESIZED_CROP  random box of SCALE_MIN..1 of the area, resized to
                       INPUT_SIZE. The photo augmentation; lower SCALE_MIN
                       (0.35 -> 0.2) is stronger, higher (-> 0.6) is gentler.
  HFLIP / VFLIP        random flips. The architect sets HFLIP False for
                       digits, characters, text and direction labels and VFLIP
                       True only for top-down views: never turn these on
                       against that judgement.
  ROTATE_DEG           random rotation of up to this many degrees (0 = off);
                       5-15 can help digits (small angles keep labels).
  COLOR_JITTER         brightness/contrast (+saturation) strength, 0.1-0.4.
  CUTOUT               px side of a random erased square: side/4..side/2 is a
                       strong regulariser for over-fitting small CNNs.
  MIXUP_ALPHA          MixUp (0.2-0.4); CUTMIX_ALPHA CutMix (1.0). Both slow
                       convergence: they pay off when training accuracy is
                       far above validation and the budget allows many epochs.
  MIX_PROB             fraction of batches mixed (0.5 is a gentler MixUp).
                       Measured headroom of the first small-cnn pipeline on
                       CIFAR-10 (200/class, 45 s, train acc 0.96 vs val 0.60):
                       MIXUP_ALPHA 0.2 +4.5% val, CUTOUT 8 +2% val, DROPOUT
                       0.3 +2% val; Fashion-MNIST: CUTOUT 8 +1.3% val.
  NORMALIZE            "dataset" statistics, or "imagenet" for pretrained.

model.py
  ARCH                 "convnet" (plain) | "resnet" (residual blocks, better
                       with DEPTH >= 2 or 4 stages) | a timm model name.
  WIDTH                stem channels (stage i has WIDTH * 2**i); cost grows
                       as WIDTH**1.65 on a CPU. The architect sizes it so
                       ~25+ epochs fit; x1.5 helps when under-fitting and the
                       budget allows.
  STAGES               resolution-halving stages (3 for <= 40 px, 4 above).
  DEPTH                blocks per stage after its pool+conv (1-3).
  ACTIVATION           "relu" | "gelu" (small CNNs).
  POOL                 global pooling before the classifier, small CNNs: "max"
                       (CIFAR-10, 1700 steps, 2 seeds: 0.7785 against 0.7761
                       for "avg"; hymenoptera, 3 seeds: 0.7277 against
                       0.7168) | "avg".
  DROPOUT              before the classifier (0.1-0.3 when over-fitting).
  DROP_PATH            stochastic depth, timm models only.
  TTA_HFLIP            eval logits averaged with the mirrored image (+0.8%
                       on CIFAR-10); set like HFLIP, never for digits/text.
  PRETRAINED           cached timm weights; used only when their architecture
                       is ARCH and info.pretrained_available is True.

train.py
  BATCH_SIZE           smaller = more steps per epoch (small data likes 32-64).
  OPTIMIZER            "sgd" (nesterov; LR ~0.05-0.2) | "adamw" (LR ~1e-3-3e-3,
                       WEIGHT_DECAY ~0.05). Change LR with it.
  LR                   peak learning rate of the schedule.
  MOMENTUM             SGD momentum or AdamW beta1.
  WEIGHT_DECAY         on conv/linear weights only (5e-4 SGD, 0.05 AdamW).
  LABEL_SMOOTHING      0.1 default; 0.2 regularises more; 0 for tiny problems.
  WARMUP_FRACTION      share of the budget ramping the LR up (0.1-0.3; raise
                       it when early training diverges).
  SCHEDULE             "onecycle" | "cosine" | "linear" | "constant", all on
                       ctx.progress(), so they end when the time does.
  EMA_DECAY            0 = off; 0.99-0.999 averages the weights and returns
                       the average (helps noisy, short runs a little).
  CHANNELS_LAST        NHWC layout, 1.3-1.8x faster on CPU: keep it True.
  GRAD_CLIP            max gradient norm, 0 = off (1.0-5.0 when unstable).
  AMP                  bf16 autocast: on CUDA, and on a CPU where the
                       throughput probe measured it faster (precision bf16).
  LOG_EVERY            steps between logged curve points.
"""

from __future__ import annotations

import ast
from dataclasses import asdict
from functools import lru_cache
from typing import Any

import jinja2

from automodel.agents.expert.recipes import Recipe, choose_recipe
from automodel.agents.expert.task import TaskFacts, read_task
from automodel.core import MODULES, Brief, Pipeline
from automodel.resources import template_environment


def _literal(value: Any) -> str:
    """Python source for a constant that ast.literal_eval reads back unchanged."""
    text = repr(value)
    if ast.literal_eval(text) != value:  # e.g. a float whose repr is not a literal (nan)
        raise ValueError(f"recipe value {value!r} has no literal form")
    return text


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = template_environment("pipelines", keep_trailing_newline=True, autoescape=False)  # Python source, not HTML
    env.filters["py"] = _literal
    return env


def render(recipe: Recipe) -> Pipeline:
    """The three module sources of `recipe`."""
    env = _environment()
    context = {
        "recipe": recipe,
        "data": recipe.data,
        "model": recipe.model,
        "train": recipe.train,
    }
    sources = {name: env.get_template(f"{name}.py.j2").render(**context) for name in MODULES}
    return Pipeline(**sources)


def plan(brief: Brief) -> tuple[TaskFacts, Recipe]:
    """The facts read from the brief and the recipe chosen for them."""
    facts = read_task(brief)
    return facts, choose_recipe(facts)


def write_pipeline(brief: Brief) -> Pipeline:
    """Write one complete pipeline (data.py, model.py, train.py) for the task."""
    _, recipe = plan(brief)
    return render(recipe)


def recipe_constants(recipe: Recipe) -> dict[str, dict[str, Any]]:
    """The UPPER_CASE constants each module opens with, as rendered from `recipe`."""
    return {name: {k.upper(): v for k, v in asdict(getattr(recipe, name)).items()} for name in MODULES}
