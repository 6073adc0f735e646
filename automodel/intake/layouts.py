"""Find out how a dataset folder is organised and which label each image file has.

Three layouts are recognised (split-folder names are case-insensitive):
    imagefolder  train/<class>/...  [+ val/ or valid/ <class>/...]  [+ test/<class>/... or test/ images]
    flat         <class>/...                                        (no split)
    csv          labels CSV (filename/id, label) + an image folder  [+ unlabelled test/ images]
Only names and stat() results are used here, never pixels: this runs on every
load and must stay cheap even for tens of thousands of files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from automodel.errors import DatasetError
from automodel.intake.images import is_image_name

_SPLIT_RE = re.compile(
    r"^(?P<name>train|training|val|valid|validation|test|testing)([ _-]?(images?|imgs|set|data))?$", re.I
)
_SPLIT_OF = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
             "test": "test", "testing": "test"}


class Candidate(NamedTuple):
    """An image file the layout assigns a label (or None: predict only) and a source split."""

    relpath: str          # posix path relative to the dataset root
    size: int             # bytes
    mtime_ns: int
    label: str | None
    split: str | None     # "train" | "val" | "test" | "predict" | None (no split given)


@dataclass
class LayoutScan:
    root: Path
    layout: str
    candidates: list[Candidate]
    preskipped: list[dict] = field(default_factory=list)   # {"path", "reason"}, never probed
    notes: dict = field(default_factory=dict)               # layout details shown in the profile


def split_of(name: str) -> str | None:
    """'Train', 'valid', 'test_images' -> 'train', 'val', 'test'; anything else -> None."""
    m = _SPLIT_RE.match(name)
    return _SPLIT_OF[m.group("name").lower()] if m else None


def is_hidden(name: str) -> bool:
    # Dotfiles (.DS_Store, ._x.jpg resource forks), __MACOSX, __pycache__, ...
    return name.startswith(".") or name.startswith("__")


def list_dir(path: Path) -> tuple[list[os.DirEntry], list[os.DirEntry]]:
    """(files, dirs) of a folder without hidden entries, each sorted by name."""
    files, dirs = [], []
    with os.scandir(path) as it:
        for entry in it:
            if is_hidden(entry.name):
                continue
            try:
                if entry.is_dir():
                    dirs.append(entry)
                elif entry.is_file():
                    files.append(entry)
            except OSError:
                continue
    files.sort(key=lambda e: e.name)
    dirs.sort(key=lambda e: e.name)
    return files, dirs


def image_entries(folder: Path, root: Path, recursive: bool = True) -> list[tuple[str, int, int]]:
    """(relpath, size, mtime_ns) of the image files in folder (and below), sorted."""
    out: list[tuple[str, int, int]] = []
    stack = [folder]
    prefix_len = len(str(root)) + 1
    while stack:
        current = stack.pop()
        try:
            files, dirs = list_dir(current)
        except OSError:
            continue
        for entry in files:
            if is_image_name(entry.name):
                try:
                    st = entry.stat()
                except OSError:
                    continue
                out.append((entry.path[prefix_len:].replace(os.sep, "/"), st.st_size, st.st_mtime_ns))
        if recursive:
            stack.extend(Path(d.path) for d in dirs)
    out.sort()
    return out


def has_images(folder: Path) -> bool:
    """Whether any image file is in folder or below; stops at the first one found."""
    stack = [str(folder)]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                for entry in it:
                    if is_hidden(entry.name):
                        continue
                    if entry.is_dir():
                        stack.append(entry.path)
                    elif is_image_name(entry.name):
                        return True
        except OSError:
            continue
    return False


def check_folder(path: Path) -> Path:
    """The dataset root as an absolute path, or a DatasetError saying what is wrong with it."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(
            f"Dataset folder {path} does not exist. Check the path (it is resolved relative to "
            f"{Path.cwd()}) and pass the folder that holds your images, e.g. one with train/<class>/ "
            f"or <class>/ sub-folders, or an image folder plus a labels CSV."
        )
    if path.is_file():
        hint = (" It looks like a CSV file: pass the folder that contains it and its images instead."
                if path.suffix.lower() in (".csv", ".tsv") else
                " If it is an archive, extract it first.")
        raise DatasetError(
            f"{path} is a file, not a dataset folder. automodel reads a folder of images organised as "
            f"train/<class>/..., <class>/..., or images plus a labels CSV.{hint}"
        )
    if not path.is_dir():
        raise DatasetError(f"{path} is not a folder automodel can read; pass a folder of images.")
    return path.resolve()


def unwrap(root: Path) -> Path:
    """Step into a lone wrapper folder (dataset.zip -> dataset/dataset/train/...)."""
    for _ in range(3):
        files, dirs = list_dir(root)
        # A README or LICENSE next to the wrapper folder does not make it a dataset level.
        relevant = [f for f in files if is_image_name(f.name) or f.name.lower().endswith((".csv", ".tsv"))]
        if relevant or len(dirs) != 1 or split_of(dirs[0].name):
            return root
        inner_files, inner_dirs = list_dir(Path(dirs[0].path))
        inner_is_dataset = inner_dirs and not any(is_image_name(f.name) for f in inner_files)
        has_csv = any(f.name.lower().endswith((".csv", ".tsv")) for f in inner_files)
        if not (inner_is_dataset or has_csv):
            return root
        root = Path(dirs[0].path)
    return root


def scan_folders(root: Path) -> LayoutScan | None:
    """imagefolder or flat layout from the folder tree; None when neither fits."""
    files, dirs = list_dir(root)
    split_dirs: dict[str, list[Path]] = {}
    for d in dirs:
        s = split_of(d.name)
        if s:
            split_dirs.setdefault(s, []).append(Path(d.path))
    if split_dirs:
        return _scan_imagefolder(root, split_dirs, files)
    return _scan_flat(root, files, dirs)


def _loose(root: Path, folder: Path) -> list[tuple[str, int, int]]:
    return image_entries(folder, root, recursive=False)


def _class_dirs(folder: Path) -> list[Path]:
    _, dirs = list_dir(folder)
    return [Path(d.path) for d in dirs if has_images(Path(d.path))]


def _scan_imagefolder(root: Path, split_dirs: dict[str, list[Path]], root_files) -> LayoutScan:
    if "train" not in split_dirs:
        found = ", ".join(sorted(p.name + "/" for ps in split_dirs.values() for p in ps))
        raise DatasetError(
            f"{root} has split folders ({found}) but no train/ folder. Put the labelled training "
            f"images in {root}/train/<class>/ (one sub-folder per class), or pass a flat folder "
            f"with one sub-folder per class."
        )
    trains = split_dirs["train"]
    train_dir = trains[0]
    class_dirs = _class_dirs(train_dir)
    if not class_dirs:
        loose = _loose(root, train_dir)
        if loose:
            raise DatasetError(
                f"{train_dir} holds {len(loose)} images directly but no class sub-folders, and no labels "
                f"CSV was found in {root}. Either sort the images into {train_dir}/<class>/ folders, or "
                f"add a CSV such as {root}/labels.csv with a filename column and a label column."
            )
        raise DatasetError(
            f"{train_dir} contains no images. Put the training images in {train_dir}/<class>/ "
            f"(one sub-folder per class, at least two classes)."
        )
    classes = {d.name for d in class_dirs}
    candidates: list[Candidate] = []
    preskipped: list[dict] = []
    for rel, size, mtime in _loose(root, train_dir):
        preskipped.append({"path": rel, "reason": f"image directly in {train_dir.name}/, outside any class folder; ignored"})
    for d in class_dirs:
        candidates += [Candidate(rel, size, mtime, d.name, "train") for rel, size, mtime in image_entries(d, root)]
    notes = {"train_dir": train_dir.name}
    for split in ("val", "test"):
        for folder in split_dirs.get(split, [])[:1]:
            notes[f"{split}_dir"] = folder.name
            for d in _class_dirs(folder):
                entries = image_entries(d, root)
                if d.name not in classes:
                    preskipped += [{"path": rel, "reason": f"class '{d.name}' has no folder in {train_dir.name}/; ignored"}
                                   for rel, _, _ in entries]
                    continue
                candidates += [Candidate(rel, size, mtime, d.name, split) for rel, size, mtime in entries]
            # Images directly inside test/ (or val/) carry no label: a prediction set.
            candidates += [Candidate(rel, size, mtime, None, "predict") for rel, size, mtime in _loose(root, folder)]
    for extra in (p for s in ("train", "val", "test") for p in split_dirs.get(s, [])[1:]):
        notes.setdefault("ignored_folders", []).append(extra.name)
    return LayoutScan(root, "imagefolder", candidates, preskipped, notes)


def _scan_flat(root: Path, files, dirs) -> LayoutScan | None:
    class_dirs = [Path(d.path) for d in dirs if has_images(Path(d.path))]
    loose = _loose(root, root)
    if not class_dirs:
        return None
    if len(class_dirs) == 1 and not loose:
        only = class_dirs[0]
        raise DatasetError(
            f"{root} has only one class folder ({only.name}/); a classifier needs at least two classes. "
            f"Add a sub-folder per class next to it (e.g. {root}/<other class>/), or pass the folder "
            f"that contains all the class folders."
        )
    candidates: list[Candidate] = []
    for d in class_dirs:
        candidates += [Candidate(rel, size, mtime, d.name, None) for rel, size, mtime in image_entries(d, root)]
    preskipped = [{"path": rel, "reason": "image directly in the dataset folder, outside any class folder; ignored"}
                  for rel, _, _ in loose]
    if len(class_dirs) == 1:
        raise DatasetError(
            f"{root} has only one class folder ({class_dirs[0].name}/) and {len(loose)} images outside any "
            f"class folder; a classifier needs at least two classes. Move each image into a sub-folder "
            f"named after its class."
        )
    return LayoutScan(root, "flat", candidates, preskipped, {})
