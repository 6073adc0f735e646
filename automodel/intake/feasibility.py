"""Before spending compute: can this dataset, on this hardware, in this budget, give a meaningful run?

    findings = assess(profile, hardware, budget)     # list[Finding], worst first
    refusal(findings)                                 # None, or the error `fit` raises without --force

Pure functions over the intake profile (intake/profile.py), the Hardware
(core.Hardware) and a Budget, so `inspect` and `fit` show the same findings.
Each finding is a warning with the number behind it; a finding whose
`blocking` is True would make the run meaningless, and `fit` refuses to start
on it unless `--force` is given. Speeds are estimates from
hardware.training_rate (measured on a 2-core CPU; the GPU figure is a guess),
so the thresholds leave a wide margin: they catch the hopeless, not the tight.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from automodel.core import Hardware
from automodel.errors import DatasetError, UsageError
from automodel.hardware import training_rate

# Training images of the smallest class: below REFUSE nothing can be learnt about it (the split
# leaves one or two examples); below WARN its validation and test scores rest on one or two images.
CLASS_TRAIN_REFUSE = 3
CLASS_TRAIN_WARN = 10
# Training images seen per class in one iteration: below REFUSE no class is seen often enough to
# learn anything in the time (about ImageNet-1k at 64 px in a minute on 2 cores); below WARN it is thin.
VIEWS_PER_CLASS_REFUSE = 30
VIEWS_PER_CLASS_WARN = 300
# Photos are decoded at up to 128 px, but a from-scratch CNN trains on them at about this side.
TRAINING_SIDE_CAP = 64
# The smallest side any pipeline would train at: when one epoch does not fit even at this size,
# nothing the Architect can choose makes the run meaningful.
SMALLEST_SIDE = 32
# Share of a held-out split that is byte-identical to training images: at or above REFUSE its
# accuracy mostly measures memory.
SHARED_REFUSE = 0.10
# Share of the class names that look like file names (IMG_0001, a hash, a timestamp, x.jpg) at or
# above which the labels are taken for noise; one such name is a warning.
FILENAME_LABELS_REFUSE = 0.5

_FILE_NAME_PATTERNS = (
    re.compile(r"^(img|image|dsc|dscn|dscf|dcim|pxl|mvimg|photo|pic|picture|screenshot|screen shot|scan|frame|"
               r"file|snapshot|capture|vid|video|untitled)[\s_\-.]*\(?\d{2,}\)?$", re.IGNORECASE),
    re.compile(r"^(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{12,}$", re.IGNORECASE),        # a content hash
    re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE),  # a UUID
    re.compile(r"(19|20)\d{6}[\s_\-T]?\d{4,6}"),                                          # a timestamp
    re.compile(r"\.(jpe?g|png|gif|bmp|tiff?|webp|heic)$", re.IGNORECASE),                  # a file extension
)


class InfeasibleDataset(DatasetError):
    """The dataset cannot give a meaningful run as it is (fit refuses without --force)."""


class InfeasibleBudget(UsageError):
    """The time budget cannot give a meaningful run on this hardware (fit refuses without --force)."""


@dataclass(frozen=True)
class Budget:
    time_per_iter: float        # training seconds per iteration (fit --time-per-iter)
    iters: int                  # iterations asked for (fit --iters)
    time_budget: float | None   # wall-clock seconds for the whole run (fit --time-budget), None: no limit
    fixed_cost: float           # seconds of an iteration outside training, as the loop reckons it
    min_train: float            # fewest training seconds the loop starts an iteration with


@dataclass(frozen=True)
class Finding:
    code: str          # small_class | too_many_classes | epoch_too_long | budget_too_short | held_out_copies
    #                    | filename_labels | budget_fits_fewer_iterations
    kind: str          # "data" (the fix is in the dataset) or "budget" (the fix is an option of fit)
    blocking: bool     # True: the run would be meaningless; fit refuses unless --force
    value: float       # the number behind the finding
    limit: float       # the threshold it crossed
    message: str       # one paragraph: what, the number, and the fix

    def to_json(self) -> dict[str, Any]:
        return dict(asdict(self), severity="refuse" if self.blocking else "warning")

    def line(self) -> str:
        return f"{'refuses' if self.blocking else 'warning'} [{self.code}] {self.message}"


def assess(profile: dict[str, Any], hardware: Hardware, budget: Budget) -> list[Finding]:
    """Every finding for this dataset profile, hardware and budget; blocking ones first."""
    found = [
        f
        for f in (
            _small_class(profile),
            _too_many_classes(profile, hardware, budget),
            _epoch_too_long(profile, hardware, budget),
            _budget_too_short(budget),
            _held_out_copies(profile),
            _filename_labels(profile),
        )
        if f is not None
    ]
    return sorted(found, key=lambda f: not f.blocking)


def refusal(findings: list[Finding]) -> InfeasibleDataset | InfeasibleBudget | None:
    """The error `fit` raises for the blocking findings (None when there are none): a data finding
    gives the dataset exit code, budget findings alone the usage one."""
    blocking = [f for f in findings if f.blocking]
    if not blocking:
        return None
    text = " ".join(f.message for f in blocking)
    text = (f"This run would not be meaningful, so fit did not start. {text} "
            f"To start anyway, add --force (the findings are recorded in run.json).")
    return InfeasibleDataset(text) if any(f.kind == "data" for f in blocking) else InfeasibleBudget(text)


def _working_side(profile: dict[str, Any]) -> int:
    size = (profile.get("working") or {}).get("image_size") or (32, 32)
    return max(int(v) for v in size)


def _where(hardware: Hardware) -> str:
    if hardware.device == "cuda":
        return f"one GPU ({hardware.gpu_name or 'CUDA'}; a rough guess, not measured)"
    return f"{hardware.cpu_cores} CPU core(s)"


def _small_class(profile: dict[str, Any]) -> Finding | None:
    counts = profile.get("class_counts") or {}
    train = counts.get("train") or {}
    if not train:
        return None
    name, n = min(train.items(), key=lambda kv: (kv[1], kv[0]))
    if n >= CLASS_TRAIN_WARN:
        return None
    few = sum(1 for v in train.values() if v < CLASS_TRAIN_WARN)
    val, test = (counts.get(s, {}).get(name, 0) for s in ("val", "test"))
    blocking = n < CLASS_TRAIN_REFUSE
    need = CLASS_TRAIN_REFUSE if blocking else CLASS_TRAIN_WARN
    others = f" ({few - 1} other class(es) have fewer than {CLASS_TRAIN_WARN} too)" if few > 1 else ""
    return Finding(
        "small_class", "data", blocking, n, need,
        f"Class '{name}' has {n} training image(s) after the stratified split ({val} for validation, {test} for "
        f"test){others}: "
        + ("too few to learn it, and its scores rest on one or two images. " if blocking else
           "its validation and test accuracies rest on very few images. ")
        + f"Add images of '{name}' (at least {math.ceil(need / 0.64)} labelled images per class give {need} for "
          f"training after the 20% test and validation splits), merge it into a related class, or remove it.",
    )


def _too_many_classes(profile: dict[str, Any], hardware: Hardware, budget: Budget) -> Finding | None:
    classes = int(profile.get("num_classes") or 0)
    if classes < 2:
        return None
    side = min(_working_side(profile), TRAINING_SIDE_CAP)
    views = training_rate(side, hardware) * budget.time_per_iter / classes
    if views >= VIEWS_PER_CLASS_WARN:
        return None
    blocking = views < VIEWS_PER_CLASS_REFUSE
    limit = VIEWS_PER_CLASS_REFUSE if blocking else VIEWS_PER_CLASS_WARN
    needed = math.ceil(budget.time_per_iter * limit / max(views, 1e-9))
    learnable = int(training_rate(side, hardware) * budget.time_per_iter / limit)
    return Finding(
        "too_many_classes", "budget", blocking, round(views, 1), limit,
        f"{classes} classes for {budget.time_per_iter:g} s of training per iteration: at about "
        f"{training_rate(side, hardware):.0f} training images/s at {side} px on {_where(hardware)}, each class "
        f"is seen about {views:.0f} times per iteration (at least {limit} are needed"
        + (" to learn anything" if blocking else " for a usable model")
        + f"; this budget can learn about {learnable} classes). Raise --time-per-iter to at least {needed} s, "
          f"or merge classes.",
    )


def _epoch_too_long(profile: dict[str, Any], hardware: Hardware, budget: Budget) -> Finding | None:
    train = int((profile.get("splits") or {}).get("train") or 0)
    side = _working_side(profile)
    if train == 0:
        return None
    epoch = train / training_rate(side, hardware)
    if epoch <= budget.time_per_iter:
        return None
    smallest = min(side, SMALLEST_SIDE)
    epoch_smallest = train / training_rate(smallest, hardware)
    blocking = epoch_smallest > budget.time_per_iter
    if blocking:
        return Finding(
            "epoch_too_long", "budget", True, round(epoch_smallest, 1), budget.time_per_iter,
            f"One epoch of the {train} training images takes about {epoch_smallest:.0f} s even at {smallest} px on "
            f"{_where(hardware)}, more than the {budget.time_per_iter:g} s of training per iteration: no iteration "
            f"would see every image once. Raise --time-per-iter to at least {math.ceil(epoch_smallest)} s, or "
            f"train on a subset (e.g. `automodel datasets fetch NAME DIR --train-per-class N` for a registry "
            f"dataset).",
        )
    fits = int(SMALLEST_SIDE * math.sqrt(training_rate(SMALLEST_SIDE, hardware) * budget.time_per_iter / train))
    fits = max(smallest, fits - fits % 8)
    return Finding(
        "epoch_too_long", "budget", False, round(epoch, 1), budget.time_per_iter,
        f"The images are decoded at {side} px, where one epoch of the {train} training images takes about "
        f"{epoch:.0f} s on {_where(hardware)}, more than the {budget.time_per_iter:g} s of training per iteration; "
        f"at {fits} px or less one epoch fits. The pipeline should train at that resolution or below (the "
        f"built-in Architect trains photos at 64-112 px), or raise --time-per-iter to {math.ceil(epoch)} s.",
    )


def _budget_too_short(budget: Budget) -> Finding | None:
    if budget.time_budget is None:
        return None
    first = budget.fixed_cost + budget.min_train
    if budget.time_budget < first:
        return Finding(
            "budget_too_short", "budget", True, budget.time_budget, first,
            f"--time-budget {budget.time_budget:g} s is shorter than the fixed cost of one iteration (about "
            f"{budget.fixed_cost:g} s to start the sandbox, import, check and predict, plus at least "
            f"{budget.min_train:g} s of training): the run would stop before its first iteration. Give "
            f"--time-budget {math.ceil(first + budget.time_per_iter)} or more, or leave it out.",
        )
    per_iter = budget.fixed_cost + budget.time_per_iter
    fit = int(budget.time_budget // per_iter)
    if fit >= budget.iters:
        return None
    return Finding(
        "budget_fits_fewer_iterations", "budget", False, fit, budget.iters,
        f"--time-budget {budget.time_budget:g} s fits about {fit} of the {budget.iters} iterations asked for "
        f"({budget.time_per_iter:g} s of training plus about {budget.fixed_cost:g} s of fixed cost each). Give "
        f"--time-budget {math.ceil(budget.iters * per_iter)} for all of them, or fewer --iters.",
    )


def _held_out_copies(profile: dict[str, Any]) -> Finding | None:
    shared = (profile.get("duplicates") or {}).get("shared_with_train") or {}
    splits = profile.get("splits") or {}
    worst = None
    for name in ("test", "val"):
        n, total = int(shared.get(name, 0)), int(splits.get(name, 0))
        if n and total and (worst is None or n / total > worst[1] / worst[2]):
            worst = (name, n, total)
    if worst is None:
        return None
    name, n, total = worst
    share = n / total
    word = "test" if name == "test" else "validation"
    blocking = share >= SHARED_REFUSE
    return Finding(
        "held_out_copies", "data", blocking, round(share, 4), SHARED_REFUSE,
        f"{n} of the {total} {word} images ({share:.0%}) are byte-identical copies of training images, so the "
        f"{word} accuracy "
        + ("mostly measures what the model memorised. " if blocking else "is somewhat optimistic. ")
        + "Remove the copies from the held-out split or from training (`automodel inspect DATASET --json` lists "
          "them under profile.duplicates).",
    )


def looks_like_file_name(name: str) -> bool:
    text = str(name).strip()
    return any(p.search(text) for p in _FILE_NAME_PATTERNS)


def _filename_labels(profile: dict[str, Any]) -> Finding | None:
    classes = [str(c) for c in profile.get("classes") or []]
    odd = [c for c in classes if looks_like_file_name(c)]
    if not odd:
        return None
    share = len(odd) / len(classes)
    blocking = share >= FILENAME_LABELS_REFUSE and len(odd) >= 2
    shown = ", ".join(odd[:4]) + (f" and {len(odd) - 4} more" if len(odd) > 4 else "")
    return Finding(
        "filename_labels", "data", blocking, round(share, 4), FILENAME_LABELS_REFUSE,
        f"{len(odd)} of the {len(classes)} class names look like file names rather than labels ({shown})"
        + (": the labels are probably taken from the wrong place. " if blocking else ". ")
        + "Put the images in one folder per class named after the class (or point the labels CSV's label column "
          "at the real labels), then run `automodel inspect` again.",
    )
