"""Readers of each source format, writing a registry dataset as class folders.

Each writer reads the files of one source (a downloaded folder or archive, or
scikit-learn's bundled digits) and hands every image to a `Sink`, which
writes it under the chosen layout. fetch.py picks the writer (entry.writer).
"""

from __future__ import annotations

import csv
import io
import random
import re
import tarfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from automodel.datasets.registry import DatasetEntry
from automodel.errors import DatasetError
from automodel.intake.splits import stratified_holdout

TEST_FRACTION = 0.2
# The 15 corruptions of the CIFAR-10-C benchmark (the archive has 4 more, unused).
CIFAR10C_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class Sink:
    """Writes images into one layout and counts them; `per_class` caps each (split, class)."""

    def __init__(self, out: Path, layout: str, per_class: int | None, train_per_class: int | None = None):
        self.out, self.layout, self.per_class, self.train_per_class = out, layout, per_class, train_per_class
        self.counts: dict[str, dict[str, int]] = {}
        self._rows: list[tuple[str, str]] = []
        self._made: set[Path] = set()

    def full(self, split: str, label: str) -> bool:
        cap = self.train_per_class if split == "train" and self.train_per_class is not None else self.per_class
        return cap is not None and self.counts.get(split, {}).get(label, 0) >= cap

    def add(
        self, split: str, label: str, image: np.ndarray | None = None, data: bytes | None = None, ext: str = ".png"
    ) -> bool:
        """Write one image (pixels, or encoded bytes kept as they are); False when the class is full."""
        if self.full(split, label):
            return False
        per = self.counts.setdefault(split, {})
        index = per.get(label, 0)
        label_dir = safe_name(label)
        stem = f"{split}_{index:06d}"
        if self.layout == "imagefolder":
            folder = self.out / split / label_dir
        elif self.layout == "flat":
            folder = self.out / label_dir
        else:
            folder = self.out / "images"
            stem = f"{split}_{label_dir}_{index:06d}"
        if folder not in self._made:
            folder.mkdir(parents=True, exist_ok=True)
            self._made.add(folder)
        if image is not None:
            from PIL import Image

            path = folder / f"{stem}.png"
            Image.fromarray(np.ascontiguousarray(image)).save(path, compress_level=1)
        else:
            path = folder / f"{stem}{ext.lower()}"
            path.write_bytes(data or b"")
        per[label] = index + 1
        if self.layout == "csv":
            self._rows.append((path.name, label))
        return True

    def close(self) -> None:
        if self.layout == "csv":
            # Kaggle-style label files list images in no class order; a fixed shuffle keeps it reproducible.
            rows = list(self._rows)
            random.Random(0).shuffle(rows)
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / "labels.csv", "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(["filename", "label"])
                writer.writerows(rows)


def safe_name(label: str) -> str:
    """A class name usable as a folder name on every system."""
    name = re.sub(r"[^\w.\-]+", "_", str(label).strip()).strip("._")
    return name or "class"


# ---------------------------------------------------------------- helpers


def stratified_split(labels: np.ndarray, seed: int, test_fraction: float = TEST_FRACTION) -> dict[str, np.ndarray]:
    """Indices of a stratified train/test split, carved the way intake carves its own (both see every class)."""
    test, train = stratified_holdout(list(np.asarray(labels).tolist()), test_fraction, seed)
    return {"train": np.asarray(train, dtype=np.int64), "test": np.asarray(test, dtype=np.int64)}


class SourceTree:
    """Files of a downloaded copy, whether a folder or a .zip/.tar archive, by relative posix path."""

    def __init__(self, root: Path):
        self.root = root
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        if root.is_dir():
            self.files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        elif zipfile.is_zipfile(root):
            self._zip = zipfile.ZipFile(root)
            self.files = sorted(n for n in self._zip.namelist() if not n.endswith("/"))
        elif root.is_file() and tarfile.is_tarfile(root):
            self._tar = tarfile.open(root)
            self._members = {m.name: m for m in self._tar.getmembers() if m.isfile()}
            self.files = sorted(self._members)
        else:
            raise DatasetError(
                f"{root} is neither a folder nor a .zip or .tar archive. Pass the folder (or archive) you "
                "downloaded as --source."
            )

    def read(self, rel: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(rel)
        if self._tar is not None:
            handle = self._tar.extractfile(self._members[rel])
            return handle.read() if handle else b""
        return (self.root / rel).read_bytes()

    def local_path(self, rel: str) -> Path | None:
        """A real file path when the copy is a folder (lets numpy memory-map big arrays)."""
        return self.root / rel if self._zip is None and self._tar is None else None

    def find(self, name: str) -> str | None:
        """The one file whose name (or path suffix) is `name`, shortest path first."""
        hits = [f for f in self.files if f == name or f.endswith("/" + name)]
        return min(hits, key=len) if hits else None

    def find_prefix(self, prefix: str) -> str | None:
        hits = [f for f in self.files if f.rsplit("/", 1)[-1].startswith(prefix)]
        return min(hits, key=len) if hits else None


def _need(tree: SourceTree, name: str, entry: DatasetEntry) -> str:
    rel = tree.find(name)
    if rel is None:
        raise DatasetError(
            f"{tree.root} does not contain {name}, which {entry.name} needs. Pass as --source the folder or archive "
            f"downloaded for {entry.name} (see `automodel datasets show {entry.name}`)."
        )
    return rel


def _npy(tree: SourceTree, rel: str) -> np.ndarray:
    path = tree.local_path(rel)
    if path is not None:
        return np.load(path, mmap_mode="r")
    return np.load(io.BytesIO(tree.read(rel)))


# ---------------------------------------------------------------- writers


def _write_digits(entry: DatasetEntry, sink: Sink, seed: int, tree: SourceTree | None) -> list[str]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError(
            "The digits set comes from scikit-learn, which is not installed. Run: pip install scikit-learn"
        ) from None
    bunch = load_digits()
    # Each pixel counts the set bits (0..16) of a 4x4 block of the original bitmap; scale to 0..255.
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    for split, idx in stratified_split(labels, seed).items():
        for i in idx:
            sink.add(split, str(labels[i]), image=images[i])
    return [f"scikit-learn digits: {len(labels)} images of 8x8 pixels, split 80/20 with seed {seed}"]


def _write_cifar10(entry: DatasetEntry, sink: Sink, seed: int, tree: SourceTree) -> list[str]:
    import pickle

    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        for name in names:
            batch = pickle.loads(tree.read(_need(tree, f"cifar-10-batches-py/{name}", entry)), encoding="latin1")
            data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            for image, label in zip(data, batch["labels"]):
                sink.add(split, CIFAR10_CLASSES[int(label)], image=image)
    return ["CIFAR-10 from the python batches (the official train/test split)"]


def _write_svhn(entry: DatasetEntry, sink: Sink, seed: int, tree: SourceTree) -> list[str]:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DatasetError("Reading SVHN's .mat files needs scipy. Run: pip install scipy") from None
    for split in ("train", "test"):
        mat = loadmat(io.BytesIO(tree.read(_need(tree, f"{split}_32x32.mat", entry))))
        images = np.asarray(mat["X"], dtype=np.uint8).transpose(3, 0, 1, 2)
        labels = np.asarray(mat["y"]).reshape(-1) % 10  # the files label the digit 0 as 10
        for image, label in zip(images, labels):
            sink.add(split, str(int(label)), image=image)
    return ["SVHN cropped digits, official train and test splits (extra not used); label 10 means digit 0"]


def _write_cifar10c(entry: DatasetEntry, sink: Sink, seed: int, tree: SourceTree) -> list[str]:
    severity = int(entry.extra.get("severity", 0))
    if severity not in range(1, 6):
        raise DatasetError(f"The registry entry {entry.name} needs 'severity' between 1 and 5.")
    labels_all = _npy(tree, _need(tree, "labels.npy", entry))
    per = len(labels_all) // 5  # five severities stacked, 10,000 rows each in the real archive
    rows = slice((severity - 1) * per, severity * per)
    labels = np.asarray(labels_all[rows], dtype=np.int64)
    # One corruption per test image, drawn uniformly; its own stream so the split seed does not change it.
    choice = np.random.default_rng(seed).integers(0, len(CIFAR10C_CORRUPTIONS), size=len(labels))
    images: np.ndarray | None = None
    for k, corruption in enumerate(CIFAR10C_CORRUPTIONS):
        chosen = np.flatnonzero(choice == k)
        if len(chosen):
            block = np.asarray(_npy(tree, _need(tree, f"{corruption}.npy", entry))[rows])
            if images is None:
                images = np.empty((len(labels), *block.shape[1:]), dtype=np.uint8)
            images[chosen] = block[chosen]
    for split, idx in stratified_split(labels, seed).items():
        for i in idx:
            sink.add(split, CIFAR10_CLASSES[int(labels[i])], image=images[i])
    counts = np.bincount(choice, minlength=len(CIFAR10C_CORRUPTIONS))
    return [
        f"CIFAR-10-C severity {severity}: one of 15 corruptions per image (seed {seed}; "
        f"{counts.min()}-{counts.max()} images per corruption), split 80/20 with seed {seed}"
    ]


def _write_tinyimagenet(entry: DatasetEntry, sink: Sink, seed: int, tree: SourceTree) -> list[str]:
    annotations = _need(tree, "val/val_annotations.txt", entry)
    base = annotations[: -len("val/val_annotations.txt")]
    pattern = re.compile(re.escape(base) + r"train/([^/]+)/images/([^/]+\.jpe?g)$", re.IGNORECASE)
    for rel in tree.files:
        match = pattern.match(rel)
        if match:
            sink.add("train", match.group(1), data=tree.read(rel), ext=Path(rel).suffix)
    for line in tree.read(annotations).decode("utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            sink.add("test", parts[1], data=tree.read(f"{base}val/images/{parts[0]}"), ext=Path(parts[0]).suffix)
    return [
        "TinyImageNet: train/ is train, the labelled val/ is test (class names are WordNet ids; words.txt names them)"
    ]


def _write_dsprites(entry: DatasetEntry, sink: Sink, seed: int, tree: SourceTree) -> list[str]:
    rel = _need(tree, "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz", entry)
    path = tree.local_path(rel)
    with np.load(
        path if path is not None else io.BytesIO(tree.read(rel)), allow_pickle=False, encoding="latin1"
    ) as npz:
        labels = np.asarray(npz["latents_classes"][:, 3], dtype=np.int64)
        split = stratified_split(labels, seed)
        if sink.per_class is not None:
            # Only the kept images need decoding: the full array is 3 GB.
            split = {
                s: np.concatenate([idx[labels[idx] == c][: sink.per_class] for c in np.unique(labels)])
                for s, idx in split.items()
            }
        imgs = npz["imgs"]
        for name, idx in split.items():
            for i in idx:
                sink.add(name, f"{int(labels[i]):02d}", image=(imgs[i] * 255).astype(np.uint8))
    return [f"dSprites orientation: class = orientation index 0-39, split 80/20 with seed {seed}"]


def _write_kaggle_csv(entry: DatasetEntry, sink: Sink, seed: int, tree: SourceTree) -> list[str]:
    spec = entry.extra.get("csv") or {}
    table = _need(tree, spec["file"], entry)
    base = table[: -len(spec["file"])]
    rows = list(csv.DictReader(io.StringIO(tree.read(table).decode("utf-8-sig"))))
    if not rows or spec["id_column"] not in rows[0] or spec["label_column"] not in rows[0]:
        raise DatasetError(
            f"{tree.root}: {spec['file']} must have the columns {spec['id_column']} and {spec['label_column']}."
        )
    names = spec.get("class_names")
    raw = [r[spec["label_column"]] for r in rows]
    labels = np.array([names[int(v)] if names else v for v in raw])
    by_name = {f.rsplit("/", 1)[-1]: f for f in tree.files if f.startswith(f"{base}{spec['images']}/")}
    missing = 0
    for split, idx in stratified_split(labels, seed).items():
        for i in idx:
            ident = rows[i][spec["id_column"]]
            stem = spec.get("id_pattern", "{id}").format(id=ident)
            rel = next((by_name[n] for n in (stem, f"{stem}.jpg", f"{ident}.jpg", f"{ident}") if n in by_name), None)
            if rel is None:
                missing += 1
                continue
            label = str(labels[i])
            if not sink.full(split, label):
                sink.add(split, label, data=tree.read(rel), ext=Path(rel).suffix or ".jpg")
    notes = [f"{entry.title}: labelled images from {spec['file']}, split 80/20 with seed {seed}"]
    if missing:
        notes.append(f"{missing} rows of {spec['file']} name an image that is not in {spec['images']}/ (skipped)")
    return notes


def _write_ahcd(entry: DatasetEntry, sink: Sink, seed: int, tree: SourceTree) -> list[str]:
    for split, image_prefix, label_prefix in (
        ("train", "csvTrainImages", "csvTrainLabel"),
        ("test", "csvTestImages", "csvTestLabel"),
    ):
        images_rel, labels_rel = tree.find_prefix(image_prefix), tree.find_prefix(label_prefix)
        if images_rel is None or labels_rel is None:
            raise DatasetError(
                f"{tree.root} has no {image_prefix}*.csv / {label_prefix}*.csv; pass the unzipped Kaggle dataset "
                "mloey1/ahcd1 (or its zip) as --source."
            )
        pixels = np.loadtxt(io.StringIO(tree.read(images_rel).decode("utf-8")), delimiter=",", dtype=np.float64)
        labels = np.loadtxt(io.StringIO(tree.read(labels_rel).decode("utf-8")), delimiter=",", dtype=np.int64).reshape(
            -1
        )
        # Each row is a 32x32 image stored column by column.
        images = np.clip(pixels, 0, 255).astype(np.uint8).reshape(-1, 32, 32).transpose(0, 2, 1)
        for image, label in zip(images, labels):
            sink.add(split, f"{int(label):02d}", image=image)
    return [
        "Arabic Handwritten Characters: the dataset's own train/test files; class NN is the NNth letter of the alphabet"
    ]


def _write_class_folders(entry: DatasetEntry, sink: Sink, seed: int, tree: SourceTree) -> list[str]:
    folder = (entry.extra.get("folders") or {}).get("train", "train")
    pattern = re.compile(
        r"(?:.*/)?" + re.escape(folder) + r"/([^/]+)/([^/]+\.(?:jpe?g|png|bmp|gif|webp))$", re.IGNORECASE
    )
    found = [(m.group(1), rel) for rel in tree.files if (m := pattern.match(rel))]
    if not found:
        raise DatasetError(
            f"{tree.root} has no {folder}/<class>/ image folders; pass the unzipped download of {entry.name} (or "
            "its zip) as --source."
        )
    labels = np.array([label for label, _ in found])
    for split, idx in stratified_split(labels, seed).items():
        for i in idx:
            label, rel = found[i]
            if not sink.full(split, label):
                sink.add(split, label, data=tree.read(rel), ext=Path(rel).suffix)
    return [f"{entry.title}: the labelled {folder}/<class>/ images, split 80/20 with seed {seed}"]


WRITERS: dict[str, Callable[[DatasetEntry, Sink, int, SourceTree | None], list[str]]] = {
    "digits": _write_digits,
    "cifar10": _write_cifar10,
    "svhn": _write_svhn,
    "cifar10c": _write_cifar10c,
    "tinyimagenet": _write_tinyimagenet,
    "dsprites": _write_dsprites,
    "kaggle-csv": _write_kaggle_csv,
    "ahcd": _write_ahcd,
    "class-folders": _write_class_folders,
}
