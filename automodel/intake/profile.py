"""The dataset profile: what the Architect (and the person running inspect) needs to know.

Built from the cached per-file metadata, so it costs no image decoding.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any, Sequence

from automodel.intake.decode import working_channels, working_size
from automodel.intake.images import GRAYSCALE_MODES

_EXAMPLES = 5
# A provided val/ or test/ split with fewer images per class than this, on average, is
# flagged: one image then moves a class's accuracy by 20 points or more, too noisy to
# choose between pipelines (val) or to report (test).
_MIN_SPLIT_PER_CLASS = 5
_SPLIT_WORDS = {"val": ("validation", "carve a stratified validation split from the training images"),
                "test": ("test", "hold out a stratified test split from the labelled images")}


def _stats(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "median": 0, "max": 0}
    med = statistics.median(values)
    return {"min": min(values), "median": int(med) if float(med).is_integer() else med, "max": max(values)}


def build_profile(ds, split) -> dict[str, Any]:
    items, metas, classes = ds.items, ds.image_meta, ds.classes
    role = [""] * len(items)
    for name in ("train", "val", "test", "predict"):
        for i in getattr(split, name):
            role[i] = name
    class_counts: dict[str, dict[str, int]] = {}
    for name in ("train", "val", "test"):
        counts = Counter(items[i].label for i in getattr(split, name))
        class_counts[name] = {c: counts.get(k, 0) for k, c in enumerate(classes)}
    all_counts = Counter(it.label for it in items if it.label is not None)
    class_counts["all"] = {c: all_counts.get(k, 0) for k, c in enumerate(classes)}
    source_counts: dict[str, Any] = defaultdict(dict)
    for it in items:
        key = it.split or "all"
        if it.label is None:
            source_counts[key] = source_counts.get(key) or {}
            source_counts[key]["(unlabelled)"] = source_counts[key].get("(unlabelled)", 0) + 1
        else:
            name = classes[it.label]
            source_counts[key][name] = source_counts[key].get(name, 0) + 1
    labelled = [n for n in class_counts["all"].values()]
    imbalance = round(max(labelled) / min(labelled), 3) if labelled and min(labelled) > 0 else None

    widths = [m.width for m in metas]
    heights = [m.height for m in metas]
    modes = Counter(m.mode for m in metas)
    size = working_size(list(zip(widths, heights)), None)
    split_source = {
        "test": "provided" if "test" in split.provided else
                (f"held out {split.test_fraction:.0%} of the labelled images (stratified, seed {split.seed})"
                 if split.test else "none"),
        "val": "provided" if "val" in split.provided else
               (f"carved {split.val_fraction:.0%} of the training images (stratified, seed {split.seed})"
                if split.val else "none"),
    }
    return {
        "root": str(ds.root),
        "layout": ds.layout,
        "layout_details": dict(ds.notes),
        "num_images": len(items),
        "num_classes": len(classes),
        "classes": list(classes),
        "splits": split.counts(),
        "split_source": split_source,
        "class_counts": class_counts,
        "source_counts": dict(source_counts),
        "imbalance_ratio": imbalance,
        "image_size": {"width": _stats(widths), "height": _stats(heights)},
        "distinct_sizes": len(set(zip(widths, heights))),
        "modes": dict(modes.most_common()),
        "formats": dict(Counter(m.format for m in metas).most_common()),
        "channels": {"grayscale": sum(n for m, n in modes.items() if m in GRAYSCALE_MODES),
                     "color": sum(n for m, n in modes.items() if m not in GRAYSCALE_MODES)},
        "working": {"image_size": list(size), "channels": working_channels(list(modes))},
        "duplicates": _duplicates(items, metas, role, classes),
        "skipped": {"count": len(ds.skipped), "examples": ds.skipped[:_EXAMPLES]},
        "has_description": bool(ds.description),
        "problems": list(getattr(ds, "problems", [])) + _split_problems(ds, split, class_counts),
    }


def _split_problems(ds, split, class_counts: dict[str, dict[str, int]]) -> list[str]:
    """Warnings for provided val/test splits that miss classes or are too small to measure anything."""
    out = []
    classes = list(ds.classes)
    for name in ("val", "test"):
        if name not in split.provided:
            continue
        counts = class_counts[name]
        absent = [c for c in classes if counts.get(c, 0) == 0]
        total = sum(counts.values())
        tiny = total < _MIN_SPLIT_PER_CLASS * len(classes)
        if not absent and not tiny:
            continue
        out.append(_split_problem(ds, name, absent, total, len(classes)))
    return out


def _split_problem(ds, name: str, absent: list[str], total: int, num_classes: int) -> str:
    word, carve = _SPLIT_WORDS[name]
    folder = ds.notes.get(f"{name}_dir")
    what = []
    if absent:
        shown = ", ".join(absent[:_EXAMPLES]) + (
            f" and {len(absent) - _EXAMPLES} more" if len(absent) > _EXAMPLES else ""
        )
        what.append(f"has no images of {len(absent)} of the {num_classes} classes ({shown})")
    what.append(f"holds {total} image(s) for {num_classes} classes")
    if folder:
        where, fix = f"{folder}/", f"Remove {folder}/ to let automodel {carve}, or add images of every class to it"
    else:  # a labels CSV with a split column
        where = f"(the '{name}' rows of {ds.notes.get('csv', 'the labels CSV')})"
        fix = f"Clear the split value of those rows to let automodel {carve}, or add rows of every class"
    why = "its accuracy ignores the missing classes" if absent else "a few images decide its accuracy"
    return (
        f"The provided {word} split {where} {' and '.join(what)}: {why}. {fix} "
        f"(at least {_MIN_SPLIT_PER_CLASS} per class)."
    )


def _duplicates(items, metas, role, classes) -> dict[str, Any]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, m in enumerate(metas):
        groups[m.digest].append(i)
    dups = [g for g in groups.values() if len(g) > 1]
    across = [g for g in dups if len({role[i] for i in g} - {""}) > 1]
    conflicting = [g for g in dups if len({items[i].label for i in g if items[i].label is not None}) > 1]

    def show(g: list[int]) -> dict[str, Any]:
        return {
            "files": [items[i].relpath for i in g[:4]],
            "splits": sorted({role[i] for i in g}),
            "labels": sorted({classes[items[i].label] for i in g if items[i].label is not None}),
        }

    # Cross-split duplicates first: they leak test images into training.
    ordered = (
        across
        + [g for g in conflicting if g not in across]
        + [g for g in dups if g not in across and g not in conflicting]
    )
    in_train = {metas[i].digest for i, r in enumerate(role) if r == "train"}
    return {
        "groups": len(dups),
        "files": sum(len(g) for g in dups),
        "across_splits": len(across),
        "conflicting_labels": len(conflicting),
        # Held-out images whose exact bytes are also a training image: their scores measure memory.
        "shared_with_train": {name: sum(1 for i, r in enumerate(role) if r == name and metas[i].digest in in_train)
                              for name in ("val", "test")},
        "examples": [show(g) for g in ordered[:_EXAMPLES]],
    }
