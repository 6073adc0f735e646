"""What a Ray task does on its node: stage the data once, run one pipeline in the sandbox, send back files.

The task runs in a Ray worker process, which is trusted automodel code; the
generated pipeline runs only in the sandboxed children that `run_iteration`
starts from it, exactly as on the driver's machine. The node has the staged
training split and the images to predict, never the validation or test labels:
it runs with score=False and the driver scores the predictions it returns.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from automodel.core import MODULES

# Files of a run sent back to the driver (whatever else the node's folder holds stays there).
RETURNED_SUFFIXES = (".json", ".jsonl", ".npy", ".pt", ".txt")
MAX_RETURNED_BYTES = 4 * 2**30


@dataclass(frozen=True)
class StagedData:
    """The staged bundle as it travels to the nodes (one object in Ray's object store per run and split)."""

    fingerprint: str
    info: dict[str, Any]
    sets: tuple[str, ...]
    counts: dict[str, int]
    files: dict[str, bytes]      # file name -> bytes: training split, images to predict, info.json, no labels


def pack_bundle(bundle) -> StagedData:
    """The bundle folder's files (it holds no validation or test labels: see sandbox/bundle.py)."""
    names = sorted(p.name for p in Path(bundle.dir).iterdir() if p.is_file() and not p.name.startswith("."))
    if any(name in ("val_y.npy", "test_y.npy") for name in names):
        raise RuntimeError(f"{bundle.dir} holds held-out labels; they must not leave the driver")
    return StagedData(bundle.fingerprint, dict(bundle.info), tuple(bundle.sets), dict(bundle.counts),
                      {name: (Path(bundle.dir) / name).read_bytes() for name in names})


def node_root() -> Path:
    return Path(os.environ.get("AUTOMODEL_NODE_DIR") or Path(tempfile.gettempdir()) / f"automodel-node-{os.getuid()}")


def stage(data: StagedData, root: Path):
    """The bundle on this node, written once per fingerprint (tasks that race each write their own copy and
    the first rename wins)."""
    from automodel.sandbox.bundle import DataBundle

    dest = root / "data" / data.fingerprint
    if not dest.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".stage-", dir=dest.parent))
        for name, content in data.files.items():
            (tmp / name).write_bytes(content)
        try:
            os.rename(tmp, dest)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not dest.is_dir():  # not another task that staged it first: a real failure
                raise
    empty = np.zeros(0, dtype=np.int64)
    return DataBundle(dest, data.info, empty, empty, data.sets, data.counts, data.fingerprint, None)


def run_candidate(data: StagedData, pipeline: dict[str, str], config, share: float = 1.0) -> dict[str, Any]:
    """Run one pipeline (its three modules' source) with `config` (a RunConfig) on this node, with `share`
    of the node's memory (a slot's); returns {"node", "result" (its IterationResult as JSON, unscored),
    "files" {name: bytes}}."""
    from automodel.core import IterationResult
    from automodel.sandbox.iteration import run_iteration
    from automodel.sandbox.limits import memory_share

    if share < 1.0:  # the node's RAM is known only here: the slot's share of what the sandbox allows
        config = replace(config, memory_limit=memory_share(share))

    root = node_root()
    root.mkdir(parents=True, exist_ok=True)
    bundle = stage(data, root)
    work = Path(tempfile.mkdtemp(prefix="iter-", dir=root))
    try:
        iter_dir = work / "iter"
        iter_dir.mkdir()
        for module in MODULES:
            (iter_dir / f"{module}.py").write_text(pipeline[module], encoding="utf-8")
        # The node picks its own sandbox level (the strongest it has), as the driver did for itself.
        res: IterationResult = run_iteration(iter_dir, bundle, replace(config, sandbox=None), score=False)
        files, total = {}, 0
        for path in sorted(iter_dir.iterdir()):
            if path.is_file() and not path.is_symlink() and path.suffix in RETURNED_SUFFIXES \
                    and path.name not in (f"{m}.py" for m in MODULES):
                total += path.stat().st_size
                if total > MAX_RETURNED_BYTES:
                    break
                files[path.name] = path.read_bytes()
        node = socket.gethostname()
        res = replace(res, config={**res.config, "node": node})
        return {"node": node, "result": res.to_json(), "files": files}
    finally:
        shutil.rmtree(work, ignore_errors=True)
