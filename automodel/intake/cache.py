"""Where intake keeps what it has already computed, and how it writes it safely.

Layout under the cache root ($AUTOMODEL_CACHE, else ~/.cache/automodel):
    intake/index/<fingerprint>.json          per-file metadata (size, mode, hash, error)
    intake/decoded/<fingerprint>_<H>x<W>x<C>.npy   uint8 (N, H, W, C) aligned with ds.items
Everything is written to a temporary file in the same folder and renamed into
place, so a crash or a concurrent run never leaves a half-written entry.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("AUTOMODEL_CACHE", "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "automodel"


def index_path(root: Path, fingerprint: str) -> Path:
    return root / "intake" / "index" / f"{fingerprint}.json"


def decoded_path(root: Path, fingerprint: str, size: tuple[int, int], channels: int) -> Path:
    return root / "intake" / "decoded" / f"{fingerprint}_{size[0]}x{size[1]}x{channels}.npy"


def read_json(path: Path) -> Any | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def write_json_atomic(path: Path, data: Any) -> bool:
    """Write JSON atomically; False (and a log line) when the cache is not writable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, separators=(",", ":"))
            os.replace(tmp, path)
        except BaseException:
            _unlink(tmp)
            raise
        return True
    except OSError as err:
        log.warning("cannot write the intake cache %s (%s); continuing without it", path, err)
        return False


def temp_sibling(path: Path) -> Path:
    """A fresh temporary path next to `path` (same filesystem, so rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _unlink(path: str | Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
