"""The expert's recipes: what to train, chosen from the facts about the task.

`choose_recipe(facts)` takes the `TaskFacts` that task.read_task made of a
Brief (sizes, channels, whether flips are safe, the compute available) and
returns a `Recipe`: three frozen dataclasses whose fields become the UPPER_CASE
constants that open data.py, model.py and train.py (see templates/pipelines/).

The numbers are tuned with benchmarks/recipes.py on a 2-core CPU with the real
harness (automodel.sandbox.iteration); the docstring of architect.py lists every knob and
what changing it does.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from automodel.agents.expert.task import KNOWN_BACKBONES, TaskFacts
from automodel.hardware import CPU_IMAGES_PER_CORE_S, CPU_PARALLEL_EFFICIENCY, bf16_speedup

# ---------------------------------------------------------------- recipe parts


@dataclass(frozen=True)
class DataRecipe:
    input_size: int                  # px side the model sees
    crop_padding: int = 0            # px of padding before a random crop
    pad_fill: tuple[int, ...] | None = None  # pad with this colour (plain backgrounds), else reflect the edge
    random_resized_crop: bool = False  # random box + resize (photos)
    scale_min: float = 0.35          # smallest box area for the random resized crop
    hflip: bool = False              # random left-right flips
    vflip: bool = False              # random up-down flips
    rotate_deg: float = 0            # max random rotation, degrees
    color_jitter: float = 0.0        # brightness/contrast/saturation strength
    cutout: int = 0                  # px side of an erased square
    mixup_alpha: float = 0.0         # MixUp Beta parameter
    cutmix_alpha: float = 0.0        # CutMix Beta parameter
    mix_prob: float = 1.0            # fraction of batches mixed when an alpha is on
    normalize: str = "dataset"       # "dataset" or "imagenet" statistics


@dataclass(frozen=True)
class ModelRecipe:
    arch: str                        # "convnet" | "resnet" | a timm model name
    width: int = 32                  # stem channels (small CNNs)
    stages: int = 3                  # resolution-halving stages (small CNNs)
    depth: int = 1                   # blocks per stage after its conv+pool (small CNNs)
    activation: str = "relu"         # "relu" | "gelu" (small CNNs)
    pool: str = "avg"                # global pooling before the classifier: "max" | "avg" (small CNNs)
    dropout: float = 0.0             # before the classifier
    drop_path: float = 0.0           # stochastic depth (timm)
    tta_hflip: bool = False          # average logits with the mirrored image at eval
    pretrained: str | None = None    # timm weights name, used when cached


@dataclass(frozen=True)
class TrainRecipe:
    batch_size: int = 64
    optimizer: str = "sgd"           # "sgd" (nesterov) | "adamw"
    lr: float = 0.05                 # peak learning rate
    momentum: float = 0.9            # SGD momentum / AdamW beta1
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup_fraction: float = 0.15    # of the time budget
    schedule: str = "onecycle"       # "onecycle" | "cosine" | "linear" | "constant"
    ema_decay: float = 0.0           # 0 = off
    channels_last: bool = True
    grad_clip: float = 0.0           # 0 = off
    amp: bool = False                # bf16 autocast: on CUDA, and on CPUs where the probe measured it faster
    log_every: int = 20              # steps between logged points


@dataclass(frozen=True)
class Recipe:
    name: str                        # "small-cnn" | "photo-cnn" | "photo-timm" | "photo-pretrained"
    data: DataRecipe
    model: ModelRecipe
    train: TrainRecipe
    # Why each choice was made, quoted in the generated modules' docstrings.
    data_notes: tuple[str, ...] = ()
    model_notes: tuple[str, ...] = ()
    train_notes: tuple[str, ...] = ()


# ---------------------------------------------------------------- sizing

# hardware.CPU_IMAGES_PER_CORE_S: training images per second per CPU core for
# SmallNet ("convnet", 3 stages, DEPTH 1, WIDTH 32, 32 px, channels_last),
# measured on one thread with `benchmarks/recipes.py --throughput` (the
# feasibility check uses it too). Cost grows about as WIDTH**1.65 and
# with the pixel count; every stage costs about the same (channels double as
# the resolution halves); each conv at a stage's pooled resolution adds ~20%.
WIDTH_EXPONENT = 1.65
# bf16 autocast's gain as the probe measures it (its CNN, its first width, batch 128) is more than runs at
# other widths and batch sizes get: they kept about three quarters of it (Fashion-MNIST at WIDTH 24: 2,390
# images/s against 3,190 from the whole gain; hymenoptera's residual net at WIDTH 32, batch 16: 157 against 202).
BF16_KEPT = 0.75
CPU_WIDTHS = (16, 24, 32, 48, 64)
# Photo sets under this many training images are small: batch 32 for the number of steps, and CutMix from
# the first pipeline (they over-fit a net trained from scratch).
SMALL_PHOTO_SET = 2000
CUTMIX_ALPHA = 1.0
# Digits, letters and text cannot be flipped; small random rotations are their augmentation instead. MNIST (6,309
# train, 60 s, WIDTH 16, ~40 epochs, in the runner): 0.9944 test against 0.9938 without on seeds 1-4, no seed
# worse (0.9942 over seeds 1-6); 15 degrees 0.9941 (5 seeds), 10 with batch 64 0.9937.
SYMBOL_ROTATE_DEG = 10


def small_cnn_rate(
    width: int, input_size: int, cores: int, stages: int = 3, depth: int = 1, arch: str = "convnet",
    measured: dict[str, Any] | None = None,
) -> float:
    """Training images per second of SmallNet on `cores` CPU cores: from the throughput probe's
    measurement of the same network family on this machine when there is one, else from the table."""
    convs_per_stage = 1 + depth * (2 if arch == "resnet" else 1)
    rates = {int(k): float(v) for k, v in ((measured or {}).get("images_per_second") or {}).items()}
    if len(rates) >= 2:
        # The probe's reference CNN is SmallNet with DEPTH 1 ("convnet"): fit rate = a * width**-k through its
        # points, then scale by pixels, stages and the extra convolutions of this recipe. k is at least the
        # table's WIDTH_EXPONENT: a lower one is a probe slowed at its first width, and overstates wide nets.
        # Hymenoptera's probe on a 2-core CPU: k 1.7-2.2 in eight runs, 0.96 and 1.33 in two whose first width
        # got 225 and 357 images/s against 377-468 in the others; those two chose WIDTH 32 for CutMix's 45
        # epochs, trained 31 and scored 0.667 and 0.699 test where WIDTH 24 scored 0.778. Probes at 28-32 px
        # measure k 1.5-1.65: the floor costs their WIDTH 32 estimate at most a tenth.
        (w0, r0), (w1, r1) = sorted(rates.items())[0], sorted(rates.items())[-1]
        k = max(WIDTH_EXPONENT, math.log(r0 / r1) / math.log(w1 / w0))
        rate = r0 * (w0 / width) ** k * (int(measured.get("input_size") or input_size) / input_size) ** 2
        rate /= (stages / int(measured.get("stages") or stages)) * (1.0 + 0.2 * (convs_per_stage - 2))
        gain = bf16_speedup(measured)
        if gain:  # the recipe autocasts: count the part of bf16's gain runs keep
            rate *= max(1.0, BF16_KEPT * gain)
        return rate
    per_core = CPU_IMAGES_PER_CORE_S * (32 / width) ** WIDTH_EXPONENT * (32 / input_size) ** 2
    per_core /= (stages / 3) * (1.0 + 0.2 * (convs_per_stage - 2))  # each conv after a stage's first adds ~20%
    # Measured end to end through the runner (2 threads, per-sample transforms
    # in the same process): 1225 images/s at WIDTH 32 on CIFAR, ~0.62 of 2x the
    # single-thread rate.
    return per_core * cores * CPU_PARALLEL_EFFICIENCY


def pick_width(
    facts: TaskFacts, model: ModelRecipe, input_size: int, batch_size: int, min_epochs: float, min_steps: int = 300
) -> int:
    """The widest SmallNet that still sees the training set `min_epochs` times
    in at least `min_steps` optimisation steps within the time budget."""
    if facts.device == "cuda":
        return 64
    best = CPU_WIDTHS[0]
    for width in CPU_WIDTHS:
        rate = small_cnn_rate(width, input_size, facts.cpu_cores, model.stages, model.depth, model.arch,
                              facts.throughput)
        images = rate * facts.time_per_iter
        if images / facts.num_train >= min_epochs and images / batch_size >= min_steps:
            best = width
    return best


def _width_reason(facts: TaskFacts, model: ModelRecipe, input_size: int, min_epochs: int) -> str:
    """Why pick_width chose model.width, with the epochs it expects (the narrowest width may fit fewer)."""
    rate = small_cnn_rate(model.width, input_size, facts.cpu_cores, model.stages, model.depth, model.arch,
                          facts.throughput)
    epochs = rate * facts.time_per_iter / max(1, facts.num_train)
    why = (f"the widest that fits {min_epochs}+ epochs" if model.width != CPU_WIDTHS[0] or epochs >= min_epochs
           else f"the narrowest; fewer than {min_epochs} epochs fit")
    return (f"{why}, about {epochs:.0f} in {facts.time_per_iter:.0f} s on {facts.cpu_cores} CPU core(s) "
            f"(~{rate:.0f} images/s).")


def _batch_size(num_train: int, device: str) -> int:
    if device == "cuda":
        size = 256 if num_train >= 4096 else 128
    else:
        # CPU: 128 keeps both cores busy (64 left a quarter of them idle on CIFAR-10, measured);
        # small sets keep 64 for the number of steps.
        size = 64 if num_train < 4096 else 128
    while size > 16 and size * 8 > num_train:  # at least ~8 steps per epoch on small sets
        size //= 2
    return size


def _autocast(facts: TaskFacts) -> bool:
    """bf16 autocast: always on CUDA; on a CPU only where the throughput probe measured it faster (CPUs with
    bf16 matrix units train 1.6-2x faster in it, the others several times slower)."""
    return facts.device == "cuda" or (facts.throughput or {}).get("precision") == "bf16"


def _precision_note(facts: TaskFacts) -> tuple[str, ...]:
    if facts.device == "cuda" or not _autocast(facts):
        return ()
    ratio = bf16_speedup(facts.throughput)
    measured = f" ({ratio:.1f}x float32's speed, measured)" if ratio else ""
    return (f"bfloat16 autocast on this CPU{measured}: more epochs, or a wider network, in the same time.",)


# ---------------------------------------------------------------- recipes


def choose_recipe(facts: TaskFacts) -> Recipe:
    if facts.pretrained and (facts.is_photo or facts.device == "cuda"):
        return _pretrained_recipe(facts)
    if facts.is_photo:
        return _photo_from_scratch(facts)
    return _small_image_recipe(facts)


def _flip_fields(facts: TaskFacts) -> dict[str, Any]:
    return {"hflip": facts.flips_allowed, "vflip": facts.top_down}


def _small_image_recipe(facts: TaskFacts) -> Recipe:
    # Tiny images (8x8 digits) get room for three poolings.
    input_size = max(16, facts.side)
    stages = 3 if input_size <= 40 else 4
    depth = 1
    batch_size = _batch_size(facts.num_train, facts.device)
    # Global max pooling: 0.7785 against 0.7761 for average pooling on CIFAR-10 (1700 steps, 2 seeds, measured);
    # on hymenoptera's residual net 0.7277 against 0.7168 (55 s, 3 seeds).
    model = ModelRecipe(arch="convnet", stages=stages, depth=depth, pool="max", tta_hflip=facts.flips_allowed)
    width = pick_width(facts, model, input_size, batch_size, min_epochs=25)
    model = dataclasses.replace(model, width=width)
    # On a plain background (digits, clothing on black) translations pad with its colour: Fashion-MNIST 0.9110
    # against 0.9066 with reflected edges (50 s in one process, 2 seeds each, measured).
    data = DataRecipe(input_size=input_size, crop_padding=max(1, input_size // 8), pad_fill=facts.background,
                      rotate_deg=SYMBOL_ROTATE_DEG if facts.symbols else 0, **_flip_fields(facts))
    train = TrainRecipe(
        batch_size=batch_size,
        optimizer="sgd",
        lr=0.1,
        weight_decay=5e-4,
        label_smoothing=0.1,
        warmup_fraction=0.15,
        schedule="onecycle",
        amp=_autocast(facts),
    )
    return Recipe(
        name="small-cnn",
        data=data,
        model=model,
        train=train,
        data_notes=(
            f"{facts.side} px images are used at {input_size} px; random crops with {data.crop_padding} px padding.",
            *facts.reasons,
            *([f"Digits, letters or text: random rotations of up to {data.rotate_deg:g} degrees, which keep their "
               "labels where flips do not."] if data.rotate_deg else []),
            "Cutout, MixUp/CutMix and colour jitter start off: the first pipeline is lightly regularised.",
        ),
        model_notes=(
            f"A {stages}-stage CNN, WIDTH {width}: {_width_reason(facts, model, input_size, 25)}"
            if facts.device == "cpu"
            else f"A {stages}-stage CNN, WIDTH {width} for the GPU.",
        ),
        train_notes=("SGD with Nesterov momentum, a one-cycle schedule on the time budget, label smoothing 0.1.",
                     *_precision_note(facts)),
    )


def _photo_from_scratch(facts: TaskFacts) -> Recipe:
    if facts.device == "cuda":
        input_size = min(128, facts.side)
        data = DataRecipe(
            input_size=input_size, random_resized_crop=True, scale_min=0.35, color_jitter=0.2, **_flip_fields(facts)
        )
        model = ModelRecipe(arch="resnet26d", dropout=0.1, drop_path=0.05, tta_hflip=facts.flips_allowed)
        train = TrainRecipe(
            batch_size=_batch_size(facts.num_train, "cuda"),
            optimizer="adamw",
            lr=2e-3,
            weight_decay=0.05,
            warmup_fraction=0.1,
            schedule="cosine",
            amp=True,
        )
        return Recipe(
            name="photo-timm",
            data=data,
            model=model,
            train=train,
            data_notes=(f"Photos at {input_size} px with random resized crops.", *facts.reasons),
            model_notes=("A timm ResNet-26d from scratch: the GPU affords it.",),
            train_notes=("AdamW with a cosine schedule on the time budget.",),
        )
    # On a CPU a small CNN at low resolution sees many more epochs than a timm net.
    input_size = 64 if facts.time_per_iter * facts.cpu_cores < 600 else 96
    input_size = min(input_size, facts.side)
    depth = 1
    batch_size = min(32 if facts.num_train < SMALL_PHOTO_SET else 64, _batch_size(facts.num_train, facts.device))
    # A few hundred photos over-fit this net within its 30+ epochs: CutMix every batch. Hymenoptera (245
    # photos, 60 s, WIDTH 24, 45 epochs, mean of 6 seeds): 0.773 test against 0.732 without; on half the
    # batches 0.758, colour jitter 0.3 instead 0.746, EMA 0.99 0.732. CutMix needs the epochs: at WIDTH 32
    # (27-31 epochs) runs scored 0.58-0.74, so with it the width is chosen for 45 epochs, not 30.
    cutmix = CUTMIX_ALPHA if facts.num_train < SMALL_PHOTO_SET else 0.0
    model = ModelRecipe(arch="resnet", stages=4, depth=depth, pool="max", tta_hflip=facts.flips_allowed)
    width = pick_width(facts, model, input_size, batch_size, min_epochs=45 if cutmix else 30)
    model = dataclasses.replace(model, width=width)
    data = DataRecipe(input_size=input_size, random_resized_crop=True, scale_min=0.35, cutmix_alpha=cutmix,
                      **_flip_fields(facts))
    train = TrainRecipe(
        batch_size=batch_size,
        optimizer="sgd",
        lr=0.05,
        weight_decay=5e-4,
        label_smoothing=0.1,
        warmup_fraction=0.15,
        schedule="onecycle",
        amp=_autocast(facts),
    )
    return Recipe(
        name="photo-cnn",
        data=data,
        model=model,
        train=train,
        data_notes=(
            f"Photos decoded at {facts.side} px are trained at {input_size} px from scratch "
            "(no cached pretrained weights): random resized crops.",
            *([f"Only {facts.num_train} training photos: CutMix on every batch against over-fitting."]
              if cutmix else []),
            *facts.reasons,
        ),
        model_notes=(
            f"A small 4-stage residual CNN, WIDTH {width}: on {facts.cpu_cores} CPU core(s) it trains "
            "many more epochs in the budget than a timm backbone.",
        ),
        train_notes=("SGD with Nesterov momentum, one-cycle schedule on the time budget, label smoothing 0.1.",
                     *_precision_note(facts)),
    )


def _pretrained_recipe(facts: TaskFacts) -> Recipe:
    name = facts.pretrained or ""
    arch = name.split(".")[0]
    cpu_px, gpu_px = next(((c, g) for a, c, g in KNOWN_BACKBONES if a == arch), (96, 128))
    input_size = gpu_px if facts.device == "cuda" else cpu_px
    data = DataRecipe(
        input_size=input_size, random_resized_crop=True, scale_min=0.5, normalize="imagenet", **_flip_fields(facts)
    )
    model = ModelRecipe(
        arch=arch,
        dropout=0.1,
        drop_path=0.05 if facts.device == "cuda" else 0.0,
        pretrained=name,
        tta_hflip=facts.flips_allowed,
    )
    train = TrainRecipe(
        batch_size=min(64 if facts.device == "cuda" else 32, _batch_size(facts.num_train, facts.device)),
        optimizer="adamw",
        lr=5e-4,
        weight_decay=0.05,
        warmup_fraction=0.1,
        schedule="cosine",
        amp=_autocast(facts),
    )
    return Recipe(
        name="photo-pretrained",
        data=data,
        model=model,
        train=train,
        data_notes=(
            f"Fine-tuning at {input_size} px with ImageNet normalisation and random resized crops.",
            *facts.reasons,
        ),
        model_notes=(f"timm {arch} starting from the cached weights {name}; from scratch if they are missing.",),
        train_notes=("AdamW at a fine-tuning learning rate, cosine schedule on the time budget.",
                     *_precision_note(facts)),
    )
