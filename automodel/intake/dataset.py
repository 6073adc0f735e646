"""load_dataset(): from a folder to a validated, profiled Dataset with cached metadata.

A warm load costs one directory scan (names + stat), one JSON read and no
image decoding; everything expensive is keyed by the fingerprint.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from automodel.errors import DatasetError
from automodel.intake import cache
from automodel.intake.csvlabels import CsvFilesMissing, find_csvs, read_labels_csv, scan_csv
from automodel.intake.decode import DecodedImages, decode_all, working_channels, working_size
from automodel.intake.index import INDEX_VERSION, ImageMeta, load_index
from automodel.intake.layouts import LayoutScan, check_folder, image_entries, scan_folders, unwrap
from automodel.intake.profile import build_profile
from automodel.intake.splits import Split, make_split

_DESCRIPTION_FILES = ("description.txt", "description.md", "readme.md", "readme.txt", "readme")
_MAX_DESCRIPTION = 20_000  # characters: a description is a hint for the agents, not a book
_EXAMPLES = 5


class ImageItem:
    """One usable image: ImageItem(path, relpath, label, split).

    `path` may be given as a str; it becomes a Path on first access, because
    building tens of thousands of Path objects is a large share of a warm load.
    """

    __slots__ = ("_path", "relpath", "label", "split")

    def __init__(self, path: Path | str, relpath: str, label: int | None, split: str | None):
        self._path = path
        self.relpath = relpath  # posix, relative to ds.root; the identity used in splits and caches
        self.label = label      # index into ds.classes; None for unlabelled (predict) images
        self.split = split      # source split from the layout: train | val | test | predict | None

    @property
    def path(self) -> Path:
        if not isinstance(self._path, Path):
            self._path = Path(self._path)
        return self._path

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageItem):
            return NotImplemented
        return (str(self._path), self.relpath, self.label, self.split) == (
            str(other._path),
            other.relpath,
            other.label,
            other.split,
        )

    def __hash__(self) -> int:
        return hash((self.relpath, self.label, self.split))

    def __repr__(self) -> str:
        return (
            f"ImageItem(path={str(self._path)!r}, relpath={self.relpath!r}, label={self.label!r}, split={self.split!r})"
        )


@dataclass
class Dataset:
    root: Path
    layout: str  # "imagefolder" | "flat" | "csv"
    classes: list[str]
    items: list[ImageItem]
    skipped: list[dict]  # {"path": relpath, "reason": ...}
    description: str
    fingerprint: str
    image_meta: list[ImageMeta] = field(repr=False)  # aligned with items
    notes: dict = field(default_factory=dict, repr=False)
    cache_root: Path | None = field(default=None, repr=False)
    index_from_cache: bool = field(default=False, repr=False)
    problems: list[str] = field(default_factory=list, repr=False)  # from the layout scan; see profile()

    def split(self, seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.2) -> Split:
        return make_split(
            [it.label for it in self.items],
            [it.split for it in self.items],
            [it.relpath for it in self.items],
            self.classes,
            seed,
            test_fraction,
            val_fraction,
            where=str(self.root),
        )

    def profile(self, split: Split | None = None) -> dict[str, Any]:
        """Counts per split and class, sizes, modes, imbalance, duplicates, skipped files."""
        return build_profile(self, split or self.split())

    def working_size(self, resolution: int | tuple[int, int] | None = None) -> tuple[int, int]:
        return working_size([(m.width, m.height) for m in self.image_meta], resolution)

    def working_channels(self) -> int:
        return working_channels([m.mode for m in self.image_meta])

    def decode(
        self,
        resolution: int | tuple[int, int] | None = None,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> DecodedImages:
        """uint8 (N, H, W, C) aligned with self.items, decoded once and cached by fingerprint."""
        size = self.working_size(resolution)
        channels = self.working_channels()
        root = cache.cache_root(cache_dir) if cache_dir is not None else (self.cache_root or cache.cache_root())
        target = cache.decoded_path(root, self.fingerprint, size, channels)
        return decode_all([str(it._path) for it in self.items], size, channels, target, progress=progress)


def load_dataset(
    path: str | os.PathLike,
    describe: str | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Dataset:
    """Detect the layout of `path`, validate it and return a Dataset; DatasetError says what to fix."""
    given = check_folder(Path(path))
    root = unwrap(given)
    scan = _detect(root)
    if not scan.candidates:
        raise DatasetError(
            f"{root} has no labelled images automodel can use. Put the images in "
            f"train/<class>/ or <class>/ sub-folders, or list them in a labels CSV."
        )
    candidates = sorted(scan.candidates, key=lambda c: c.relpath)
    fingerprint = _fingerprint(scan.layout, candidates)
    croot = cache.cache_root(cache_dir)
    metas, warm = load_index(
        root,
        [c.relpath for c in candidates],
        fingerprint,
        croot,
        total_bytes=sum(c.size for c in candidates),
        progress=progress,
    )

    # Classes come from the layout (before reading pixels) so a class whose
    # images are all unreadable is reported as too small, not silently dropped.
    class_names = _sorted_classes(
        {c.label for c in candidates if c.label is not None and c.split not in ("val", "test")}
    )
    if len(class_names) < 2:
        where = scan.notes.get("csv", root)
        found = f"only the class '{class_names[0]}'" if class_names else "no class"
        raise DatasetError(
            f"{root}: found {found} in {where}; a classifier needs at least two classes. Add images of the "
            f"other classes (one sub-folder or label value per class) and run again."
        )
    index = {c: i for i, c in enumerate(class_names)}
    items: list[ImageItem] = []
    item_meta: list[ImageMeta] = []
    skipped = list(scan.preskipped)
    unreadable: list[dict] = []
    prefix = str(root) + os.sep
    for cand, meta in zip(candidates, metas):
        if meta.error:
            unreadable.append({"path": cand.relpath, "reason": meta.error})
            continue
        if cand.label is not None and cand.label not in index:
            skipped.append({"path": cand.relpath, "reason": f"label '{cand.label}' has no training images; ignored"})
            continue
        items.append(
            ImageItem(
                prefix + cand.relpath, cand.relpath, None if cand.label is None else index[cand.label], cand.split
            )
        )
        item_meta.append(meta)
    skipped += unreadable
    skipped.sort(key=lambda s: s["path"])
    if not items:
        examples = "; ".join(f"{s['path']}: {s['reason']}" for s in unreadable[:3])
        raise DatasetError(
            f"None of the {len(candidates)} image files in {root} could be read ({examples}). Check that they "
            f"are real PNG/JPEG/BMP/GIF/WebP/TIFF images (not truncated downloads or Git LFS pointers) and run again."
        )
    ds = Dataset(
        root,
        scan.layout,
        class_names,
        items,
        skipped,
        _description(describe, given, root),
        fingerprint,
        item_meta,
        scan.notes,
        croot,
        warm,
        list(scan.problems),
    )
    ds.split()  # raises DatasetError now when a class is too small to split
    return ds


def _detect(root: Path) -> LayoutScan:
    headerless_error = None
    for csv_path in find_csvs(root):
        try:
            table = read_labels_csv(csv_path)
        except OSError as err:
            raise DatasetError(
                f"Cannot read {csv_path} ({err}). Check its permissions, or move it out of the dataset folder."
            ) from None
        if table.file_col is None:
            headerless_error = headerless_error or table
            continue
        if table.label_col is not None:
            try:
                return scan_csv(root, table)
            except CsvFilesMissing as err:
                # A CSV that matches no image at all (results.csv, metadata) next to
                # class folders is not the labels file: the folders are.
                folders = _folders_or_none(root) if err.resolved == 0 else None
                if folders is None:
                    raise
                return folders
        # A file column but no label column: use the folders if they carry labels, else explain the CSV.
        folders = _folders_or_none(root)
        if folders is not None:
            return folders
        return scan_csv(root, table)  # raises the "no label column" error listing the header
    folders = scan_folders(root)
    if folders is not None:
        return folders
    total = len(image_entries(root, root))
    if headerless_error is not None:
        raise DatasetError(
            f"{headerless_error.path} has no column automodel recognises as the image file name; its header is: "
            f"{','.join(headerless_error.header)}. Name the columns e.g. 'filename,label' (one image per row), or "
            f"sort the images into one sub-folder per class."
        )
    if total == 0:
        raise DatasetError(
            f"{root} contains no images (looked for .png, .jpg, .jpeg, .bmp, .gif, .webp and .tif files in it and "
            f"its sub-folders). Point automodel at the folder that holds your images, organised as "
            f"train/<class>/..., <class>/..., or images plus a labels CSV."
        )
    raise DatasetError(
        f"{root} holds {total} images but no labels: there are no class sub-folders and no labels CSV. Move each "
        f"image into a sub-folder named after its class ({root}/<class>/...), or add {root}/labels.csv with the "
        f"columns filename,label."
    )


def _folders_or_none(root: Path) -> LayoutScan | None:
    try:
        return scan_folders(root)
    except DatasetError:
        return None


def _fingerprint(layout: str, candidates) -> str:
    lines = "".join(f"{c.relpath}\t{c.size}\t{c.mtime_ns}\t{c.label}\t{c.split}\n" for c in candidates)
    text = f"automodel-intake/{INDEX_VERSION}/{layout}\n{lines}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _sorted_classes(names: set[str]) -> list[str]:
    # "2" before "10" when every class name is an integer; plain sort otherwise.
    if names and all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


def _description(describe: str | None, *folders: Path) -> str:
    if describe is not None and describe.strip():
        return describe.strip()
    for folder in dict.fromkeys(folders):
        try:
            names = {e.name.lower(): e.path for e in os.scandir(folder) if e.is_file()}
        except OSError:
            continue
        for wanted in _DESCRIPTION_FILES:
            if wanted in names:
                try:
                    with open(names[wanted], encoding="utf-8", errors="replace") as fh:
                        return fh.read(_MAX_DESCRIPTION).strip()
                except OSError:
                    continue
    return ""
