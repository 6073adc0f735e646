"""Kaggle-style datasets: a labels CSV next to a folder of images.

Tolerates what real dumps contain: a BOM, CRLF line endings, blank lines,
`;` or tab separators, header names such as image_id/file/path and
class/target/category, ids without a file extension (matched by stem), and
paths given relative to the dataset root or as bare file names.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from automodel.errors import DatasetError
from automodel.intake.images import IMAGE_EXTENSIONS
from automodel.intake.layouts import Candidate, LayoutScan, Walk, image_entries, list_dir, split_of

# Normalised header names, best first.
FILE_COLUMNS = ("filename", "file_name", "file", "fname", "image", "image_name", "imagename", "image_file",
                "img", "img_name", "image_path", "imagepath", "img_path", "path", "filepath", "file_path",
                "image_id", "imageid", "img_id", "id", "name")
LABEL_COLUMNS = ("label", "labels", "class", "class_name", "classname", "category", "category_name",
                 "target", "y", "breed", "species", "tag", "class_id", "label_id", "category_id")
SPLIT_COLUMNS = ("split", "subset", "set")
_PREFERRED = ("labels.csv", "train.csv", "train_labels.csv", "trainlabels.csv", "annotations.csv", "data.csv")
_EXAMPLES = 5


class CsvFilesMissing(DatasetError):
    """Rows of the labels CSV name files that are not there (`resolved`: how many rows did resolve)."""

    def __init__(self, message: str, resolved: int):
        super().__init__(message)
        self.resolved = resolved


@dataclass
class LabelsCsv:
    path: Path
    header: list[str]
    file_col: int | None
    label_col: int | None
    split_col: int | None
    rows: list[list[str]]


def find_csvs(root: Path) -> list[Path]:
    files, _ = list_dir(root)
    csvs = [Path(f.path) for f in files if f.name.lower().endswith((".csv", ".tsv"))]

    def rank(p: Path) -> tuple:
        name = p.name.lower()
        # sample_submission.csv has an id and a (dummy) label column: last resort only.
        junk = "submission" in name or "sample" in name
        return (junk, _PREFERRED.index(name) if name in _PREFERRED else len(_PREFERRED), name)

    return sorted(csvs, key=rank)


def _norm(name: str) -> str:
    return name.strip().strip('"').lstrip("\ufeff").strip().lower().replace(" ", "_").replace("-", "_")


def read_labels_csv(path: Path) -> LabelsCsv:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    first = next((line for line in text.splitlines() if line.strip()), "")
    delim = max((",", ";", "\t", "|"), key=first.count) if first else ","
    if path.suffix.lower() == ".tsv":
        delim = "\t"
    rows = [[c.strip() for c in row] for row in csv.reader(io.StringIO(text, newline=""), delimiter=delim)]
    rows = [r for r in rows if any(r)]  # blank and trailing lines
    if not rows:
        return LabelsCsv(path, [], None, None, None, [])
    header = [_norm(c) for c in rows[0]]
    file_col = next((header.index(n) for n in FILE_COLUMNS if n in header), None)
    if file_col is None:
        # No recognised header: is the first row already data ("img_001.png,cat")?
        looks_like_file = [i for i, c in enumerate(rows[0]) if os.path.splitext(c)[1].lower() in IMAGE_EXTENSIONS]
        if looks_like_file and len(rows[0]) == 2:
            fc = looks_like_file[0]
            return LabelsCsv(path, [f"column{i + 1}" for i in range(2)], fc, 1 - fc, None, rows)
        return LabelsCsv(path, rows[0], None, None, None, rows[1:])
    label_col = next((header.index(n) for n in LABEL_COLUMNS if n in header and header.index(n) != file_col), None)
    if label_col is None and len(header) == 2:
        label_col = 1 - file_col  # e.g. "id,has_cactus": the only other column is the label
    split_col = next((header.index(n) for n in SPLIT_COLUMNS if n in header), None)
    return LabelsCsv(path, rows[0], file_col, label_col, split_col, rows[1:])


def scan_csv(root: Path, table: LabelsCsv) -> LayoutScan:
    """Resolve every CSV row to an image file under root; DatasetError when rows point nowhere."""
    header_text = ",".join(table.header)
    if table.label_col is None:
        raise DatasetError(
            f"{table.path} has a file column ('{table.header[table.file_col]}') but no label column that "
            f"automodel recognises; its header is: {header_text}. Rename the column holding the class to "
            f"'label' (or class/target/category), keeping one image per row."
        )
    if not table.rows:
        raise DatasetError(
            f"{table.path} has a header ({header_text}) but no rows. Add one row per image: file name, label."
        )
    walk = Walk(root)
    entries = image_entries(root, root, walk=walk)
    by_rel = {rel: (rel, size, mtime) for rel, size, mtime in entries}
    by_name: dict[str, list[str]] = {}
    by_stem: dict[str, list[str]] = {}
    for rel in by_rel:
        name = rel.rsplit("/", 1)[-1]
        by_name.setdefault(name.lower(), []).append(rel)
        by_stem.setdefault(os.path.splitext(name)[0].lower(), []).append(rel)

    def options(value: str) -> list[str]:
        value = value.replace("\\", "/")
        while value.startswith("./"):
            value = value[2:]
        if value in by_rel:
            return [value]
        name = PurePosixPath(value).name
        if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
            hits = by_name.get(name.lower(), [])
            # "images/x.png" should not match ".../other/x.png" if the given folder differs.
            return [h for h in hits if h.lower().endswith(value.lower())] or hits
        return by_stem.get(name.lower(), [])

    resolved: list[list[str]] = [
        options(row[table.file_col] if table.file_col < len(row) else "") for row in table.rows
    ]
    # Several files with the same name (train/1.jpg, test/1.jpg): prefer the folder most rows point to.
    folder_votes = Counter(_folder(opts[0]) for opts in resolved if len(opts) == 1)
    if not folder_votes:  # every name is ambiguous: count all options, a test/ folder last
        folder_votes = Counter(
            _folder(o) for opts in resolved for o in opts if split_of(_folder(o).rsplit("/", 1)[-1]) != "test"
        )
    main_folder = folder_votes.most_common(1)[0][0] if folder_votes else None

    candidates: dict[str, Candidate] = {}
    preskipped: list[dict] = []
    missing: list[str] = []
    for row, opts in zip(table.rows, resolved):
        value = row[table.file_col] if table.file_col < len(row) else ""
        label = row[table.label_col] if table.label_col < len(row) else ""
        if not opts:
            missing.append(value or "(empty)")
            continue
        if len(opts) > 1:
            opts = [o for o in opts if _folder(o) == main_folder] or opts
        rel, size, mtime = by_rel.get(opts[0]) or (opts[0], 0, 0)
        if not label:
            preskipped.append({"path": rel, "reason": f"no label in {table.path.name}; ignored"})
            continue
        split = None
        if table.split_col is not None and table.split_col < len(row):
            split = split_of(row[table.split_col])
        previous = candidates.get(rel)
        if previous is not None:
            if previous.label != label:
                del candidates[rel]
                preskipped.append(
                    {
                        "path": rel,
                        "reason": f"listed twice in {table.path.name} with different labels "
                        f"('{previous.label}' and '{label}'); ignored",
                    }
                )
            continue
        candidates[rel] = Candidate(rel, size, mtime, label, split)
    if missing:
        examples = ", ".join(repr(m) for m in missing[:_EXAMPLES])
        raise CsvFilesMissing(
            f"{table.path} names {len(missing)} image file(s) that do not exist under {root} "
            f"(e.g. {examples}; looked for the path, the file name and, for ids without an extension, "
            f"the file stem anywhere below the dataset folder). Fix the '{table.header[table.file_col]}' column "
            f"or put the missing images next to the others.",
            resolved=len(table.rows) - len(missing),
        )
    notes = {
        "csv": table.path.name,
        "file_column": table.header[table.file_col],
        "label_column": table.header[table.label_col],
    }
    if main_folder:
        notes["image_folder"] = main_folder
    out = sorted(candidates.values(), key=lambda c: c.relpath)
    # Unlisted images in a test/ folder are the prediction set (Kaggle's test images).
    listed = set(candidates) | {s["path"] for s in preskipped}
    # Taken from the one walk above: walking test/ again would find it already read.
    _, dirs = list_dir(root)
    for d in dirs:
        if split_of(d.name) == "test" and d.name != main_folder:
            out += [
                Candidate(*by_rel[rel], None, "predict")
                for rel in sorted(by_rel)
                if rel.startswith(d.name + "/") and rel not in listed
            ]
    listed |= {c.relpath for c in out}
    unlisted = sum(1 for rel in by_rel if rel not in listed)
    if unlisted:
        notes["unlisted_images_ignored"] = unlisted
    return LayoutScan(root, "csv", out, preskipped + walk.not_followed, notes, walk.problems())


def _folder(relpath: str) -> str:
    return relpath.rsplit("/", 1)[0] if "/" in relpath else ""
