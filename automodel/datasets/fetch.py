"""Write a registry dataset as a folder a user would hand to `automodel fit`.

    result = fetch(entry, dest, per_class=50, layout="imagefolder")

Layouts: imagefolder (DEST/train/<class>/, DEST/test/<class>/), flat
(DEST/<class>/, splits merged) and csv (DEST/images/ + DEST/labels.csv).
`per_class` keeps the first N images of every class in every split.

Where the images come from (entry.writer):
- digits: scikit-learn's bundled digits, offline, split 80/20 with a seed;
- materialize: the shared sets, written by shared/tools/materialize.py (run
  as a subprocess, so its logic stays in one place);
- the network sets: read from the files the user downloaded (`source`, a
  folder or the downloaded archive), or downloaded into the cache when the
  network is there (URL sets only; Kaggle needs the user's credentials).
  Without either, a DatasetError says what to download, from where, and how
  to use it.

Everything is written into a hidden sibling folder first and renamed at the
end, so an interrupted fetch never leaves a half-written DEST.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from automodel.datasets.registry import DatasetEntry, shared_dir
from automodel.datasets.writers import WRITERS, Sink, SourceTree, safe_name
from automodel.errors import DatasetError, UsageError

LAYOUTS = ("imagefolder", "flat", "csv")
OFFLINE_ENV = "AUTOMODEL_OFFLINE"


@dataclass
class FetchResult:
    name: str
    dest: Path
    layout: str
    counts: dict[str, dict[str, int]]       # split -> class -> images written
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(sum(per.values()) for per in self.counts.values())


# ------------------------------------------------------------------- sinks




# -------------------------------------------------------- shared (materialize)


def _materialize(entry: DatasetEntry, out: Path, layout: str, per_class: int | None,
                 train_per_class: int | None = None) -> tuple[dict[str, dict[str, int]], list[str]]:
    shared = shared_dir()
    tool = shared / "tools" / "materialize.py"

    def run(dest: Path, split: str, cap: int | None) -> None:
        cmd = [sys.executable, str(tool), "--dataset", str(entry.source.shared), "--layout", layout,
               "--out", str(dest), "--data-dir", str(shared / "datasets"), "--split", split]
        if cap is not None:
            cmd += ["--per-class", str(cap)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise DatasetError(f"{tool} failed to write {entry.name} (exit {proc.returncode}): {' '.join(tail)} "
                               f"Check the shared folder {shared / 'datasets'} against its SOURCES.md.")

    if train_per_class is None:
        run(out, "all", per_class)
    else:
        # The tool caps every split alike: write the splits separately, then join them.
        run(out, "train", train_per_class)
        run(out.with_name(out.name + "-test"), "test", per_class)
        (out.with_name(out.name + "-test") / "test").rename(out / "test")
        shutil.rmtree(out.with_name(out.name + "-test"))
    return _count_written(out, layout), [f"written by {tool} from {shared / 'datasets'}"]


def _count_written(out: Path, layout: str) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    if layout == "csv":
        with open(out / "labels.csv", newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                per = counts.setdefault("all", {})
                per[row["label"]] = per.get(row["label"], 0) + 1
        return counts
    splits = [d for d in sorted(out.iterdir()) if d.is_dir()] if layout == "imagefolder" else [out]
    for split_dir in splits:
        name = split_dir.name if layout == "imagefolder" else "all"
        for class_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
            counts.setdefault(name, {})[class_dir.name] = sum(1 for f in class_dir.iterdir() if f.is_file())
    return counts


# ---------------------------------------------------------------- download


def downloads_dir() -> Path:
    base = os.environ.get("AUTOMODEL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "automodel")
    return Path(base) / "downloads"


def how_to_obtain(entry: DatasetEntry) -> str:
    """What to download, from where, and how to use it once downloaded."""
    src = entry.source
    if src.type == "kaggle":
        page = src.homepage or f"https://www.kaggle.com/{src.kaggle_slug}"
        archive = f"{src.kaggle_slug.rsplit('/', 1)[-1]}.zip" if src.kaggle_slug else "the downloaded zip"
        return (f"{entry.name} ({entry.title}) is on Kaggle: accept its rules at {page}, put your Kaggle API token in "
                f"~/.kaggle/kaggle.json, run `{src.kaggle_command()}`, then `automodel datasets fetch {entry.name} DIR "
                f"--source {archive}` writes it as an image folder.")
    files = "; ".join(f"{f.url} (md5 {f.md5})" if f.md5 else f"{f.url} (no published checksum)" for f in src.files)
    archive = any(f.filename.endswith((".zip", ".tar", ".tar.gz", ".tgz")) for f in src.files)
    text = (f"{entry.name} ({entry.title}) must be downloaded: get {files} into a folder ROOT"
            + (" (extracting the archive is optional)" if archive else "")
            + f", then `automodel datasets fetch {entry.name} DIR --source ROOT` writes it as an image folder.")
    if src.torchvision:
        text += f" Or load it in Python with {src.torchvision}."
    return text


def _download(entry: DatasetEntry) -> Path:
    """Download the entry's files into the cache (checked against their md5) and return that folder."""
    if os.environ.get(OFFLINE_ENV):
        raise DatasetError(f"{OFFLINE_ENV} is set, so nothing is downloaded. {how_to_obtain(entry)}")
    if entry.source.type == "kaggle" or not entry.source.files:
        raise DatasetError(how_to_obtain(entry))
    # One folder per download (named after its first file) so sets sharing an archive share it.
    folder = downloads_dir() / safe_name(entry.source.files[0].filename.split(".")[0])
    folder.mkdir(parents=True, exist_ok=True)
    for spec in entry.source.files:
        target = folder / spec.filename
        if target.exists() and (spec.md5 is None or _md5(target) == spec.md5):
            continue
        partial = target.with_name(target.name + ".partial")
        try:
            with urllib.request.urlopen(spec.url, timeout=30) as response, open(partial, "wb") as fh:
                shutil.copyfileobj(response, fh, length=1 << 20)
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            partial.unlink(missing_ok=True)
            reason = getattr(err, "reason", err)
            raise DatasetError(f"Could not download {spec.url} ({reason}). {how_to_obtain(entry)}") from None
        if spec.md5 is not None and _md5(partial) != spec.md5:
            partial.unlink(missing_ok=True)
            raise DatasetError(f"The download of {spec.url} does not match its md5 {spec.md5}; it was deleted. "
                               f"Try again, or {how_to_obtain(entry)}")
        partial.replace(target)
    return folder


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _source_tree(entry: DatasetEntry, folder: Path) -> SourceTree:
    """The downloaded copy: a folder, or the single archive in the download folder."""
    if folder.is_dir():
        archives = [folder / f.filename for f in entry.source.files if (folder / f.filename).is_file()]
        extracted = any(p.is_dir() for p in folder.iterdir())
        if len(archives) == 1 and not extracted and archives[0].suffix in (".zip", ".tar", ".gz"):
            if archives[0].name.endswith(".tar.gz"):
                return SourceTree(_extract(archives[0]))
            return SourceTree(archives[0])
    return SourceTree(folder)


def _extract(archive: Path) -> Path:
    """Unpack a .tar.gz next to itself once (compressed tars cannot be read member by member quickly)."""
    dest = archive.with_name(archive.name[: -len(".tar.gz")])
    if not dest.is_dir():
        tmp = dest.with_name(dest.name + ".extracting")
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        tmp.replace(dest)
    return dest


# ------------------------------------------------------------------- fetch


def fetch(
    entry: DatasetEntry,
    dest: str | Path,
    *,
    per_class: int | None = None,
    layout: str = "imagefolder",
    seed: int | None = None,
    source: str | Path | None = None,
    force: bool = False,
    train_per_class: int | None = None,
) -> FetchResult:
    """Write `entry` into `dest` (new or empty; `force` replaces it) and say what was written.

    `train_per_class` caps the training split only (a small training set scored on the
    whole test set); `per_class` caps every split (for the test split when both are given)."""
    if layout not in LAYOUTS:
        raise UsageError(f"--layout {layout} is not one of {', '.join(LAYOUTS)}.")
    if per_class is not None and per_class < 1:
        raise UsageError(f"--per-class must be at least 1 (got {per_class}).")
    if train_per_class is not None and (train_per_class < 1 or layout != "imagefolder"):
        raise UsageError(
            "--train-per-class needs a number of at least 1 and the imagefolder layout (the other layouts merge the "
            "splits)."
        )
    seed = entry.split.seed if seed is None else seed
    dest = Path(dest).expanduser().resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not force:
        raise UsageError(f"{dest} exists and is not empty. Choose a new folder, or add --force to replace it.")
    if entry.writer != "materialize" and entry.writer not in WRITERS:
        raise DatasetError(
            f"The registry entry {entry.name} names the writer '{entry.writer}', which this version of automodel "
            "does not have."
        )

    tree: SourceTree | None = None
    if entry.writer not in ("digits", "materialize"):
        if source is not None:
            src = Path(source).expanduser()
            if not src.exists():
                raise DatasetError(f"--source {src} does not exist. {how_to_obtain(entry)}")
            tree = _source_tree(entry, src)
        else:
            tree = _source_tree(entry, _download(entry))

    t0 = time.time()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if entry.writer == "materialize":
            counts, notes = _materialize(entry, tmp, layout, per_class, train_per_class)
        else:
            sink = Sink(tmp, layout, per_class, train_per_class)
            notes = WRITERS[entry.writer](entry, sink, seed, tree)
            sink.close()
            counts = sink.counts
        if not counts:
            raise DatasetError(f"No images were written for {entry.name}; check the source files.")
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        tmp.replace(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return FetchResult(
        name=entry.name,
        dest=dest,
        layout=layout,
        counts=_merge_flat(counts, layout),
        seconds=time.time() - t0,
        notes=notes,
    )


def _merge_flat(counts: dict[str, dict[str, int]], layout: str) -> dict[str, dict[str, int]]:
    """For the merged layouts report one 'all' split, whichever writer produced the counts."""
    if layout == "imagefolder" or set(counts) == {"all"}:
        return counts
    merged: dict[str, int] = {}
    for per in counts.values():
        for label, n in per.items():
            merged[label] = merged.get(label, 0) + n
    return {"all": merged}


def iter_summary(result: FetchResult) -> Iterator[str]:
    """Human-readable lines about a fetch, for the CLI."""
    yield (f"wrote {result.name} to {result.dest} (layout {result.layout}, {result.total} images, "
           f"{result.seconds:.1f} s)")
    order = {"train": 0, "val": 1, "test": 2}
    for split, per in sorted(result.counts.items(), key=lambda kv: (order.get(kv[0], 3), kv[0])):
        detail = ", ".join(f"{k}={v}" for k, v in sorted(per.items())[:12])
        more = f", ... ({len(per)} classes)" if len(per) > 12 else ""
        yield f"  {split}: {sum(per.values())} images in {len(per)} classes [{detail}{more}]"
    for note in result.notes:
        yield f"  {note}"
