"""Looks everywhere for validation/test labels: the filesystem from /, the data
bundle and its parents, environment variables, other processes, and the dataset
and run folders whose host paths it was told (HOSTILE_CONFIG, set by the test). Whatever it finds
goes into a HOSTILE_REPORT line on stdout; the model then predicts class 0 for everything,
unless it found labels, in which case it would cheat."""

SCAN_SECONDS = 20.0   # seconds allowed for the filesystem walk

import json
import os
import time
from pathlib import Path

import numpy as np

LABEL_NAMES = {"val_y.npy", "test_y.npy", "labels.csv", "metrics.json", "run.json", "journal.jsonl"}
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def _scan_tree(root: str, class_names, deadline: float, found: list, scanned: list) -> None:
    skip = {"/proc", "/sys", "/dev"}
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: None):
        if time.monotonic() > deadline:
            found.append(f"scan-timeout:{dirpath}")
            return
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
        scanned.append(dirpath)
        base = os.path.basename(dirpath)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if name in LABEL_NAMES and not path.startswith(os.getcwd()):
                found.append(path)
            elif name.lower().endswith(IMAGE_EXT) and base in class_names:
                found.append(path)  # an image inside a folder named after a class: labelled data


def train(model, data, ctx):
    cfg = HOSTILE_CONFIG  # noqa: F821 - set by tests/hostile/kit.py
    class_names = set(data.info.class_names)
    found, scanned, attempts = [], [], {}
    deadline = time.monotonic() + SCAN_SECONDS
    _scan_tree("/", class_names, deadline, found, scanned)
    # The data bundle and every parent of it and of the working directory.
    for start in [os.getcwd(), *[str(Path(p).parent) for p in cfg.get("bundle_guesses", [])]]:
        p = Path(start)
        for parent in [p, *p.parents]:
            try:
                names = os.listdir(parent)
            except OSError as err:
                attempts[f"listdir:{parent}"] = type(err).__name__
                continue
            for name in names:
                if name in {"val_y.npy", "test_y.npy"}:
                    found.append(str(parent / name))
    # Environment variables naming a path that exists.
    for key, value in os.environ.items():
        for part in value.split(os.pathsep):
            if (
                part.startswith("/")
                and any(s in part for s in ("dataset", "pytest", "run", "shared"))
                and os.path.exists(part)
            ):
                found.append(f"env:{key}={part}")
    # Host paths it was told: the dataset folder, the run folder, the held-out label arrays.
    for key in ("dataset", "run_dir", "labels_file"):
        path = cfg.get(key)
        if not path:
            continue
        try:
            if os.path.isdir(path):
                found.append(f"{key}:{path}:{sorted(os.listdir(path))[:5]}")
            else:
                with open(path, "rb") as fh:
                    fh.read(16)
                found.append(f"{key}:{path}")
        except OSError as err:
            attempts[key] = type(err).__name__
    # Other processes' command lines and environments (the parent knows the dataset path).
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        for what in ("cmdline", "environ"):
            try:
                text = Path(f"/proc/{pid}/{what}").read_bytes().decode("utf-8", "replace")
            except OSError:
                continue
            if cfg.get("dataset") and cfg["dataset"] in text:
                found.append(f"proc:{pid}:{what}")
    report = {
        "found": found,
        "attempts": attempts,
        "dirs_scanned": len(scanned),
        "saw_python": any("site-packages" in d for d in scanned),
    }
    print("HOSTILE_REPORT", json.dumps(report), flush=True)
    with __import__("torch").no_grad():
        for p in model.parameters():
            p.zero_()  # constant output: class 0 everywhere, i.e. chance level
    return model
