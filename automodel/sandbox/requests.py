"""What one iteration's children are given: the run's settings (RunConfig), their specs,
and their sandbox requests (which folder is writable, what is mounted read-only)."""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from automodel.core import MODULES
from automodel.sandbox.bundle import DataBundle
from automodel.sandbox.levels import (
    CHILD_HELPERS,
    CHILD_SCRIPT,
    INSIDE_DATA,
    INSIDE_HARNESS,
    INSIDE_ITER,
    Mount,
    Request,
    base_env,
    layout,
    python_mounts,
)
from automodel.sandbox.limits import Slot


@dataclass(frozen=True)
class RunConfig:
    time_limit: float = 60.0            # seconds of training (ctx.time_budget)
    device: str = "cpu"                 # "cpu" or "cuda"
    seed: int = 0                       # seeds python, numpy and torch in the child
    threads: int = 0                    # torch/OMP threads; 0 = all cores
    preflight: bool = True              # run the tiny-subset preflight before training
    preflight_steps: int = 3            # batches in the preflight
    preflight_subset: int = 64          # training images in the preflight
    preflight_limit: float = 60.0       # s from launch until the preflight must have passed
    interrupt_grace: float | None = None  # s past the deadline before train() is interrupted (None: 5 + 10%)
    kill_grace: float = 15.0            # s after that (saving the model) before the parent kills the tree
    predict_allowance: float = 120.0    # s for the prediction process
    memory_limit: int | None = None     # bytes for a child's tree, RAM-backed files included; None = 75% of RAM
    disk_limit: int = 8 * 2**30         # bytes a child may keep in its work folder
    log_limit: int = 20 * 2**20         # bytes per log (stdout, stderr): head and tail kept beyond it
    max_processes: int = 1024           # processes a child's tree may have alive
    gpu: str | None = None              # CUDA device id(s) for the child (None: as the parent sees them)
    sandbox: str | None = None          # force a level: "bwrap" | "unshare" | "none"
    loader_workers: int = 0             # DataLoader workers for data.loader()
    cache_dir: Path | None = None       # Hugging Face hub cache with pretrained weights (read-only in the sandbox)
    pretrained_available: bool | None = None  # overrides info.pretrained_available (None: the bundle's)
    hidden: tuple[Path, ...] = ()       # more host paths to keep out of the sandbox

    def grace(self) -> float:
        return self.interrupt_grace if self.interrupt_grace is not None else 5.0 + 0.1 * self.time_limit

    def slot(self) -> Slot:
        return Slot(threads=self.threads, memory=self.memory_limit, gpu=self.gpu, max_processes=self.max_processes,
                    disk=self.disk_limit, log_bytes=self.log_limit)


def child_info(bundle: DataBundle, config: RunConfig) -> dict:
    info = dict(bundle.info, device=config.device)
    if config.pretrained_available is not None:
        info["pretrained_available"] = bool(config.pretrained_available)
    return info


def train_spec(bundle: DataBundle, config: RunConfig, pipeline: Path, data: Path, out: Path) -> dict:
    return {
        "mode": "train", "pipeline_dir": str(pipeline), "data_dir": str(data), "out_dir": str(out),
        "info": child_info(bundle, config), "seed": int(config.seed), "device": config.device,
        "threads": config.slot().cores(), "time_budget": float(config.time_limit),
        "interrupt_grace": float(config.grace()), "loader_workers": int(config.loader_workers),
        "preflight": {"enabled": bool(config.preflight), "max_steps": int(config.preflight_steps),
                      "subset": int(config.preflight_subset),
                      # The child's own limit, well inside the parent's (which also covers start-up and imports).
                      "time_budget": max(2.0, 0.8 * float(config.preflight_limit) - 1.0)},
    }


def child_request(level: str, iter_dir: Path, work: Path, spec_name: str, config: RunConfig, *,
             data: list[Mount], ro: list[tuple[Path, str]], hidden: tuple[Path, ...]) -> Request:
    """The child's request: `work` writable (its cwd), `data` read-only, the modules,
    the spec and `ro` files (host path, name inside the work folder) read-only."""
    cache = Path(config.cache_dir) if config.cache_dir and Path(config.cache_dir).is_dir() else None
    lay = layout(level, work, INSIDE_DATA, cache)
    threads = config.slot().cores()
    if level == "bwrap":
        env = base_env(threads)
        harness = INSIDE_HARNESS
        mounts = [*python_mounts(hidden), *data, Mount(work, INSIDE_ITER, writable=True)]
        if cache:
            mounts.append(Mount(cache.resolve(), lay.cache_dir))
        # The sources, the spec and the inputs are laid read-only over the writable folder.
        files = [Mount(CHILD_SCRIPT, INSIDE_HARNESS), Mount(iter_dir / spec_name, INSIDE_ITER / "spec.json")]
        files += [Mount(helper, INSIDE_HARNESS.with_name(helper.name)) for helper in CHILD_HELPERS]
        modules = [iter_dir / f"{m}.py" for m in MODULES]
        files += [Mount(path, INSIDE_ITER / path.name) for path in modules if path.is_file()]
        files += [Mount(host, INSIDE_ITER / name) for host, name in ro]
        spec_path = INSIDE_ITER / "spec.json"
    else:
        scratch = work / ".tmp"
        scratch.mkdir(exist_ok=True)
        env = base_env(threads, home=str(scratch), tmp=str(scratch))
        harness, mounts, files, spec_path = CHILD_SCRIPT, [], [], iter_dir / spec_name
    if lay.cache_dir:
        # Only the hub folder is visible (automodel.weights): timm finds the weights through HF_HUB_CACHE.
        env["HF_HUB_CACHE"] = str(lay.cache_dir)
    return Request(argv=(sys.executable, "-I", "-B", str(harness), str(spec_path)), cwd=lay.iter_dir,
                   stdout=iter_dir / "stdout.txt", stderr=iter_dir / "stderr.txt", mounts=tuple(mounts),
                   ro_files=tuple(files), env=env, hidden=hidden, gpu=config.device.startswith("cuda"),
                   marker=uuid.uuid4().hex)
