"""Where a run's pipelines run: sandboxed children on this machine, or Ray tasks (--executor ray), in slots
of the machine or cluster when a round's candidates run at once (--parallel K).

    runner = make_runner(cfg, hardware, run_config, bundles, progress)
    result = runner.execute(iter_dir, time_limit, refit=False, slot=None)
    runner.close()

`execute` is what the loop calls (search/loop.Execute); it has a `cancel`
attribute when its runs go elsewhere (Ray tasks), so a cancelled round stops
them too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from automodel.core import Hardware, IterationResult
from automodel.hardware import gpu_count
from automodel.search.pool import WorkerSlot, make_slots
from automodel.search.progress import Progress


@dataclass
class Runner:
    execute: Callable[..., IterationResult]
    slots: list[WorkerSlot] | None     # --parallel K: the K slots (None: one run at a time, the whole machine)
    close: Callable[[], None]


def make_runner(cfg, hardware: Hardware, run_config, bundle_for: Callable[[bool], Any], progress: Progress) -> Runner:
    """`bundle_for(refit)` gives the staged data of a run (train+val for the final refit)."""
    from automodel.sandbox.iteration import run_iteration

    remote = None
    if cfg.executor == "ray":
        from automodel.remote.ray_executor import RayExecutor, gpu_share

        remote = RayExecutor.connect(cfg.ray_address, progress.note)
        progress.note(f"automodel: executor: {remote.describe()}")
    cores = remote.node_cores() if remote else hardware.cpu_cores
    gpus = remote.gpus() if remote else gpu_count(cfg.device)
    slots = make_slots(cfg.parallel, cores, gpus, cfg.executor) if cfg.parallel > 1 else None

    def execute(iter_dir: Path, time_limit: float, refit: bool = False, slot: WorkerSlot | None = None):
        config = dataclasses.replace(run_config, time_limit=time_limit)
        if remote is not None:
            share = gpu_share(len(slots), gpus) if slot is not None and slots else gpu_share(1, gpus)
            threads = slot.threads if slot else cores
            return remote.run(iter_dir, bundle_for(refit), config, threads, share, min(1.0, threads / cores))
        if slot is not None:
            config = dataclasses.replace(config, threads=slot.threads, memory_limit=slot.memory, gpu=slot.gpu)
        return run_iteration(iter_dir, bundle_for(refit), config)

    execute.cancel = remote.cancel if remote else None  # type: ignore[attr-defined]
    return Runner(execute, slots, remote.close if remote else (lambda: None))
