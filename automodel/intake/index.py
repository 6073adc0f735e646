"""Per-file image metadata (size, mode, format, content hash, readability), probed once.

Probing opens every image, so its result is cached by the dataset fingerprint:
a second load of the same folder costs a directory scan and one JSON read.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

from automodel.intake import cache
from automodel.intake.images import probe
from automodel.intake.parallel import ProgressLine, chunked, run_chunks, use_pool, worker_count

INDEX_VERSION = 1


class ImageMeta(NamedTuple):
    width: int            # pixels, after EXIF orientation
    height: int
    mode: str             # Pillow mode as stored: L, RGB, RGBA, P, I;16, ...
    format: str           # PNG, JPEG, GIF, ...
    digest: str           # blake2b of the file bytes (exact-duplicate detection)
    error: str | None     # why the file cannot be used, None when it is readable


def _probe_chunk(paths: list[str]) -> list[tuple]:
    return [probe(p) for p in paths]


def probe_files(paths: Sequence[str], total_bytes: int = 0, progress: bool = True) -> list[ImageMeta]:
    workers = worker_count()
    ranges = chunked(len(paths), workers, max_chunk=128)
    jobs = [(list(paths[a:b]),) for a, b in ranges]
    out: list[ImageMeta | None] = [None] * len(paths)
    bar = ProgressLine("reading images", len(paths), enabled=progress)
    for j, results in run_chunks(_probe_chunk, jobs, [b - a for a, b in ranges], bar, workers,
                                 use_pool(len(paths), total_bytes, workers)):
        start = ranges[j][0]
        for k, row in enumerate(results):
            out[start + k] = ImageMeta(*row)
    bar.close()
    return out  # type: ignore[return-value]


def load_index(root: Path, relpaths: Sequence[str], fingerprint: str, cache_root: Path,
               total_bytes: int = 0, progress: bool = True) -> tuple[list[ImageMeta], bool]:
    """Metadata aligned with relpaths and whether it came from the cache."""
    path = cache.index_path(cache_root, fingerprint)
    data = cache.read_json(path)
    if isinstance(data, dict) and data.get("version") == INDEX_VERSION and data.get("fingerprint") == fingerprint:
        files = data.get("files", {})
        if all(rel in files for rel in relpaths):
            return [ImageMeta._make(files[rel]) for rel in relpaths], True
    metas = probe_files([str(root / rel) for rel in relpaths], total_bytes, progress=progress)
    cache.write_json_atomic(path, {
        "version": INDEX_VERSION, "fingerprint": fingerprint, "root": str(root),
        "files": {rel: [m.width, m.height, m.mode, m.format, m.digest, m.error] for rel, m in zip(relpaths, metas)},
    })
    return metas, False
