"""Files on disk: written atomically, read from untrusted writers, removed safely.

The one place for three habits the whole tool relies on:
- a file the tool writes appears whole or not at all (`atomic_file` and the
  helpers on it), so a kill at any moment never leaves half a record;
- a file a sandboxed child wrote is read without following links, with a size
  cap (`read_untrusted`, `read_untrusted_json`): the child may have planted a
  link to a host file, a fifo, or gigabytes;
- a folder a child wrote into is walked and deleted without recursion and
  without following links (`walk_entries`, `remove_tree`): it may be nested
  thousands of levels deep, hold entries with the names of our own files, or
  links out of the sandbox.
Imports nothing of automodel's.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import uuid
from pathlib import Path
from typing import IO, Any, Iterator

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


class UntrustedFileError(Exception):
    """A file a child wrote is missing, not a regular file, or too large; the message says which."""


# ---------------------------------------------------------------- atomic writes

def clear_for_write(path: Path) -> None:
    """Make room for a regular file at `path`: remove a directory, link or special
    file sitting there (a child may have made one with the name of a trusted file)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        remove_tree(path)
    elif not stat.S_ISREG(mode):
        os.unlink(path)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary sibling of `path`; on success it is fsynced and renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        clear_for_write(path)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_file(path) as fh:
        fh.write(text)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path, "wb") as fh:
        fh.write(data)


def atomic_write_json(path: Path, data: Any, **dumps: Any) -> None:
    atomic_write_text(path, json.dumps(data, **({"indent": 2, "default": str} | dumps)) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---------------------------------------------------------------- untrusted reads

def read_untrusted(path: Path, max_bytes: int, truncate: bool = False) -> bytes:
    """Bytes of a regular file a child wrote, without following links or blocking on a fifo.

    A file over `max_bytes` is refused, or with `truncate` read only that far."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise UntrustedFileError(f"{path.name} is missing.") from None
    except OSError as err:
        raise UntrustedFileError(
            f"{path.name} cannot be opened ({err.strerror}); it must be a regular file, not a link."
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UntrustedFileError(f"{path.name} is not a regular file.")
        if info.st_size > max_bytes and not truncate:
            raise UntrustedFileError(f"{path.name} is {info.st_size} bytes, more than the {max_bytes} allowed.")
        with os.fdopen(fd, "rb") as fh:
            fd = -1
            return fh.read(max_bytes)
    finally:
        if fd >= 0:
            os.close(fd)


def read_untrusted_text(path: Path, max_bytes: int) -> str:
    """The first `max_bytes` of a child's text file; "" when it is missing or not a regular file."""
    try:
        return read_untrusted(path, max_bytes, truncate=True).decode("utf-8", "replace")
    except UntrustedFileError:
        return ""


def read_untrusted_json(path: Path, max_bytes: int = 1_000_000) -> dict[str, Any]:
    """A small JSON object a child wrote; {} when it is missing, malformed, too large or not an object."""
    try:
        raw = json.loads(read_untrusted(path, max_bytes))
    except (UntrustedFileError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


# ------------------------------------------------------- walking and deleting trees


def walk_entries(top: Path, max_entries: int) -> Iterator[tuple[str, os.stat_result]]:
    """(path, lstat) of everything below `top`, breadth first, links not followed,
    without recursion; stops after `max_entries`. Entries whose path is too long
    to open are skipped: no code of ours can reach them by path either."""
    queue = [str(top)]
    seen = 0
    while queue:
        folder = queue.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > max_entries:
                return
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            yield entry.path, info
            if stat.S_ISDIR(info.st_mode):
                queue.append(entry.path)


def _unlink_all_but_folders(fd: int) -> list[str]:
    """Unlink every non-folder entry of the open folder `fd`; return its subfolders' names."""
    folders = []
    with os.scandir(fd) as it:
        entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    for name, is_dir in entries:
        if is_dir:
            folders.append(name)
        else:
            os.unlink(name, dir_fd=fd)
    return folders


def remove_tree(path: Path) -> None:
    """Delete `path` and everything in it, however deep, never following a link.

    Works with folder file descriptors one level at a time (no recursion, no
    path length limit, two descriptors open at most), so a tree nested
    thousands of levels deep goes too. A link or file at `path` is unlinked."""
    path = Path(path)
    try:
        fd = os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        return
    except OSError as err:
        if err.errno in (getattr(os, "ELOOP", 40), getattr(os, "ENOTDIR", 20)):  # a link or a file
            os.unlink(path)
            return
        raise
    names: list[str] = []  # the path from `path` down to `fd`
    pending = [_unlink_all_but_folders(fd)]  # per level: subfolders still to delete
    try:
        while True:
            if pending[-1]:
                name = pending[-1].pop()
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
                names.append(name)
                pending.append(_unlink_all_but_folders(fd))
                continue
            pending.pop()
            if not names:
                break
            parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = parent
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


def unique_sibling(path: Path, tag: str) -> Path:
    """A new name next to `path` (for moving something aside before deleting it)."""
    return path.with_name(f".{path.name}.{tag}.{uuid.uuid4().hex[:8]}")
