"""Find out how a dataset folder is organised and which label each image file has.

Three layouts are recognised (split-folder names are case-insensitive):
    imagefolder  train/<class>/...  [+ val/ or valid/ <class>/...]  [+ test/<class>/... or test/ images]
    flat         <class>/...                                        (no split)
    csv          labels CSV (filename/id, label) + an image folder  [+ unlabelled test/ images]
Only names and stat() results are used here, never pixels: this runs on every
load and must stay cheap even for tens of thousands of files.

Directory symlinks are followed, because linking a class folder in from
elsewhere (train/cat -> /data/cats) is a normal way to assemble a dataset, but
every walk of one scan shares a `Walk` that reads each real directory (device,
inode) at most once. A link to a folder already read, such as train/Bag/loop -> ..,
is not followed and is reported as skipped ("directory symlink loop: ...") and as
a problem in the profile: no image is counted twice, under two labels, or forever.
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
    problems: list[str] = field(default_factory=list)       # warnings with their fix, shown in the profile


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


class Walk:
    """The directories one scan has read, so that none is read twice (see the module docstring).

    Directories are claimed when they are first listed, before anything below them
    is read: the layout's own folders (splits, classes) are claimed first, so a link
    from one class folder into another or back up the tree is the one left out.
    """

    def __init__(self, root: Path):
        self.root = root
        self._prefix_len = len(str(root)) + 1
        self._seen: dict[tuple[int, int], str] = {}   # (st_dev, st_ino) -> relpath it was first read as
        self.not_followed: list[dict] = []             # {"path", "reason"}, shown as skipped entries
        self.claim(str(root))

    def rel(self, path: str) -> str:
        return path[self._prefix_len:].replace(os.sep, "/")

    def claim(self, path: str | os.PathLike) -> bool:
        """Mark a directory as read; False (and a skipped entry) when it was read under another path."""
        path = str(path)
        key = _dir_key(path)
        if key is None:
            return False
        rel = self.rel(path)
        first = self._seen.setdefault(key, rel)
        if first == rel:
            return True
        self.not_followed.append({"path": rel, "reason": _not_followed_reason(path, rel, first)})
        return False

    def has_read(self, key: tuple[int, int]) -> bool:
        return key in self._seen

    def problems(self) -> list[str]:
        """One line for the profile's problems when a folder was left out, else none."""
        if not self.not_followed:
            return []
        first = self.not_followed[0]
        more = f"; {len(self.not_followed) - 1} more listed as skipped" if len(self.not_followed) > 1 else ""
        line = (f"{len(self.not_followed)} folder link(s) not followed ({first['reason']}{more}): each folder is "
                f"read once, so no image is counted twice or under a second class. Remove the link(s) to silence "
                f"this warning.")
        return [line]


def _not_followed_reason(path: str, rel: str, first: str) -> str:
    try:
        target = os.readlink(path)
    except OSError:
        target = None  # a bind mount or a hard-linked folder, not a symlink
    shown = f"{rel} -> {target}" if target is not None else rel
    first_shown = (first + "/") if first else "the dataset folder"
    if not first or rel.startswith(first + "/"):
        return f"directory symlink loop: {shown} leads back to {first_shown}, which contains it; not followed"
    return f"directory {shown} is the same folder as {first_shown}, already read; not followed"


def image_entries(folder: Path, root: Path, recursive: bool = True,
                  walk: Walk | None = None) -> list[tuple[str, int, int]]:
    """(relpath, size, mtime_ns) of the image files in folder (and below), sorted.

    Pass the scan's `walk` so folders already read elsewhere in the scan are left out.
    """
    walk = walk or Walk(root)
    if not walk.claim(folder):
        return []
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
            stack.extend(Path(d.path) for d in dirs if walk.claim(d.path))
    out.sort()
    return out


def has_images(folder: Path, walk: Walk | None = None) -> bool:
    """Whether any image file is in folder or below; stops at the first one found.

    Claims nothing, but never enters a folder the walk has read or one it has
    already looked in, so a symlink loop cannot keep it searching.
    """
    looked = {_dir_key(str(folder))}
    stack = [str(folder)]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                for entry in it:  # streamed: a folder of 100k images answers at its first one
                    if is_hidden(entry.name):
                        continue
                    if not _is_dir(entry):
                        if is_image_name(entry.name):
                            return True
                        continue
                    key = _dir_key(entry.path)
                    if key is not None and key not in looked and not (walk and walk.has_read(key)):
                        looked.add(key)
                        stack.append(entry.path)
        except OSError:
            continue
    return False


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _dir_key(path: str) -> tuple[int, int] | None:
    """(device, inode) of the directory a path leads to; None when it cannot be stat()ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def check_folder(path: Path) -> Path:
    """The dataset root as an absolute path, or a DatasetError saying what is wrong with it."""
    path = Path(path).expanduser()
    if not path.exists():
        relative = "" if path.is_absolute() else f" (it is resolved relative to {Path.cwd()})"
        raise DatasetError(
            f"Dataset folder {path} does not exist. Check the path{relative} and pass the folder that holds "
            f"your images, e.g. one with train/<class>/ or <class>/ sub-folders, or an image folder plus a labels CSV."
        )
    if path.is_file():
        hint = (
            " It looks like a CSV file: pass the folder that contains it and its images instead."
            if path.suffix.lower() in (".csv", ".tsv")
            else " If it is an archive, extract it first."
        )
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
        if _leads_back(Path(dirs[0].path), root):
            return root  # wrapper/ -> . would be stepped into forever
        inner_files, inner_dirs = list_dir(Path(dirs[0].path))
        inner_is_dataset = inner_dirs and not any(is_image_name(f.name) for f in inner_files)
        has_csv = any(f.name.lower().endswith((".csv", ".tsv")) for f in inner_files)
        if not (inner_is_dataset or has_csv):
            return root
        root = Path(dirs[0].path)
    return root


def _leads_back(folder: Path, root: Path) -> bool:
    """Whether folder is root itself or one of its parents (through a symlink)."""
    real, here = folder.resolve(), root.resolve()
    return real == here or real in here.parents


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


def _loose(root: Path, folder: Path, walk: Walk) -> list[tuple[str, int, int]]:
    return image_entries(folder, root, recursive=False, walk=walk)


def _class_dirs(folder: Path, walk: Walk) -> list[Path]:
    """Sub-folders of folder that hold images, each claimed for the walk before any is read."""
    _, dirs = list_dir(folder)
    claimed = [Path(d.path) for d in dirs if walk.claim(d.path)]
    return [d for d in claimed if has_images(d, walk)]


def _scan_imagefolder(root: Path, split_dirs: dict[str, list[Path]], root_files) -> LayoutScan:
    if "train" not in split_dirs:
        found = ", ".join(sorted(p.name + "/" for ps in split_dirs.values() for p in ps))
        raise DatasetError(
            f"{root} has split folders ({found}) but no train/ folder. Put the labelled training "
            f"images in {root}/train/<class>/ (one sub-folder per class), or pass a flat folder "
            f"with one sub-folder per class."
        )
    walk = Walk(root)
    # First the layout's own folders, then what is below them: a link from one class
    # folder into another (or back up) is the one left out, not the class folder.
    used = {split: split_dirs[split][0] for split in ("train", "val", "test") if split in split_dirs}
    used = {split: folder for split, folder in used.items() if walk.claim(folder)}
    train_dir = split_dirs["train"][0]
    class_dirs_of = {split: _class_dirs(folder, walk) for split, folder in used.items()}
    class_dirs = class_dirs_of.get("train", [])
    if not class_dirs:
        loose = _loose(root, train_dir, walk)
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
    for rel, size, mtime in _loose(root, train_dir, walk):
        preskipped.append(
            {"path": rel, "reason": f"image directly in {train_dir.name}/, outside any class folder; ignored"}
        )
    for d in class_dirs:
        candidates += [
            Candidate(rel, size, mtime, d.name, "train") for rel, size, mtime in image_entries(d, root, walk=walk)
        ]
    notes = {"train_dir": train_dir.name}
    for split in ("val", "test"):
        if split in used:
            folder = used[split]
            notes[f"{split}_dir"] = folder.name
            for d in class_dirs_of[split]:
                entries = image_entries(d, root, walk=walk)
                if d.name not in classes:
                    preskipped += [
                        {"path": rel, "reason": f"class '{d.name}' has no folder in {train_dir.name}/; ignored"}
                        for rel, _, _ in entries
                    ]
                    continue
                candidates += [Candidate(rel, size, mtime, d.name, split) for rel, size, mtime in entries]
            # Images directly inside test/ (or val/) carry no label: a prediction set.
            candidates += [
                Candidate(rel, size, mtime, None, "predict") for rel, size, mtime in _loose(root, folder, walk)
            ]
    for extra in (p for s in ("train", "val", "test") for p in split_dirs.get(s, [])[1:]):
        notes.setdefault("ignored_folders", []).append(extra.name)
    return LayoutScan(root, "imagefolder", candidates, preskipped + walk.not_followed, notes, walk.problems())


def _scan_flat(root: Path, files, dirs) -> LayoutScan | None:
    walk = Walk(root)
    class_dirs = _class_dirs(root, walk)
    loose = _loose(root, root, walk)
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
        candidates += [
            Candidate(rel, size, mtime, d.name, None) for rel, size, mtime in image_entries(d, root, walk=walk)
        ]
    preskipped = [
        {"path": rel, "reason": "image directly in the dataset folder, outside any class folder; ignored"}
        for rel, _, _ in loose
    ]
    if len(class_dirs) == 1:
        raise DatasetError(
            f"{root} has only one class folder ({class_dirs[0].name}/) and {len(loose)} images outside any "
            f"class folder; a classifier needs at least two classes. Move each image into a sub-folder "
            f"named after its class."
        )
    return LayoutScan(root, "flat", candidates, preskipped + walk.not_followed, {}, walk.problems())
