"""`fit --executor ray`: each run is a Ray task, on a local Ray instance or on a cluster.

    executor = RayExecutor.connect(address)          # None: start a local instance (stopped by close())
    result = executor.run(iter_dir, bundle, config, slot)

The task (remote/node.py) stages the data bundle on its node once per run (it
travels once, through Ray's object store; it holds the training split and the
images to predict, never the validation or test labels), runs the pipeline in
the sandbox there, and returns the run's files; this process writes them into
the iteration's folder and scores the predictions itself. A task whose worker
or node is lost is run once more; a second loss makes the run "lost", which is
no fault of the code (nothing is repaired). Ctrl-C or an error elsewhere in the
round cancels the tasks (`cancel`), so nothing keeps running on the cluster.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from automodel.core import MODULES, ErrorInfo, IterationResult, SandboxInfo
from automodel.errors import UsageError
from automodel.files import atomic_write_json
from automodel.remote.node import pack_bundle, run_candidate
from automodel.sandbox.supervisor import ChildCancelled

INSTALL_HINT = 'Ray is an optional extra: install it with pip install "automodel[ray]" (or pip install ".[ray]" ' \
               "in a checkout of automodel), then run again."


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError(f"--executor ray needs Ray, which is not installed here. {INSTALL_HINT}") from None
    return ray


class RayExecutor:
    def __init__(self, ray, started_here: bool, note: Any = print):
        self.ray, self.started_here, self.note = ray, started_here, note
        self._task = ray.remote(run_candidate)
        self._data: dict[str, Any] = {}        # bundle fingerprint -> its object in the store
        self._running: set[Any] = set()        # object refs of tasks in flight
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, address: str | None, note: Any = print) -> "RayExecutor":
        """Join the cluster at `address` ("auto", "ray://host:port", host:port), or start a local instance
        with this machine's cores when None. `note(text)` tells the person what happens (progress)."""
        ray = import_ray()
        quiet = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
        try:
            if address:
                ray.init(address=address, **quiet)
            else:
                ray.init(num_cpus=os.cpu_count() or 1, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise UsageError(f"could not start or reach {where}: {err}. Check that `ray start --head` ran "
                             "there (and `ray status` lists the nodes), or leave out --ray-address to start a "
                             "local instance.") from None
        return cls(ray, started_here=not address, note=note)

    # ---- what the cluster has
    def node_cores(self) -> int:
        """CPUs of the largest live node: what one run may be given at most."""
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        return max((int(n.get("Resources", {}).get("CPU", 0)) for n in nodes), default=1) or 1

    def gpus(self) -> int:
        return int(self.ray.cluster_resources().get("GPU", 0))

    def describe(self) -> str:
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        res = self.ray.cluster_resources()
        return (f"Ray {self.ray.__version__}, {'a local instance' if self.started_here else 'a cluster'} of "
                f"{len(nodes)} node(s), {int(res.get('CPU', 0))} CPUs, {int(res.get('GPU', 0))} GPUs")

    # ---- runs
    def run(self, iter_dir: Path, bundle, config, threads: int, gpu_share: float,
            memory_share: float = 1.0) -> IterationResult:
        """Run the pipeline in iter_dir as a task with `threads` CPUs (and `gpu_share` of a GPU, and
        `memory_share` of its node's memory), write its files into iter_dir and score it here."""
        from automodel.sandbox.iteration import clear_run_files, score_iteration

        data = self._staged(bundle)
        pipeline = {m: (iter_dir / f"{m}.py").read_text(encoding="utf-8") for m in MODULES}
        config = replace(config, threads=threads, gpu=None)  # Ray sets CUDA_VISIBLE_DEVICES for a GPU task
        lost: list[str] = []
        while True:
            options: dict[str, Any] = {"num_cpus": threads, "max_retries": 0, "retry_exceptions": False}
            if gpu_share:
                options["num_gpus"] = gpu_share
            ref = self._task.options(**options).remote(data, pipeline, config, memory_share)
            with self._lock:
                self._running.add(ref)
            try:
                out = self.ray.get(ref)
                break
            except self._lost_errors() as err:
                lost.append(f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}")
                if len(lost) == 2:
                    return _lost(iter_dir, lost)
                self.note(f"        {iter_dir.name} lost its Ray worker ({lost[-1]}): running it again")
            except self.ray.exceptions.TaskCancelledError:
                raise ChildCancelled("the round was cancelled") from None
            except self.ray.exceptions.RayTaskError as err:
                return _harness_error(iter_dir, f"the Ray task failed on automodel's side: {err}")
            except KeyboardInterrupt:
                self.ray.cancel(ref, force=True)
                raise
            finally:
                with self._lock:
                    self._running.discard(ref)
        clear_run_files(iter_dir)
        for name, content in out["files"].items():
            if "/" in name or name.startswith(".") or name in (f"{m}.py" for m in MODULES):
                continue  # only plain file names, and never the pipeline this process wrote
            (iter_dir / name).write_bytes(content)
        res = IterationResult.from_json(out["result"])
        res = replace(res, config={**res.config, "node": out["node"], "executor": "ray",
                                   **({"lost_workers": lost} if lost else {})})
        return score_iteration(iter_dir, bundle, res)

    def _staged(self, bundle) -> Any:
        with self._lock:
            if bundle.fingerprint not in self._data:
                self._data[bundle.fingerprint] = self.ray.put(pack_bundle(bundle))
            return self._data[bundle.fingerprint]

    def _lost_errors(self) -> tuple[type[BaseException], ...]:
        exc = self.ray.exceptions
        names = ("WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError", "LocalRayletDiedError",
                 "RaySystemError")
        return tuple(getattr(exc, n) for n in names if hasattr(exc, n))

    def cancel(self) -> None:
        """Cancel every task in flight (Ctrl-C, or another run of the round failed)."""
        with self._lock:
            running = list(self._running)
        for ref in running:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - a task that just ended cannot be cancelled; nothing to do
                pass

    def close(self) -> None:
        self.cancel()
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()


def gpu_share(slots: int, gpus: int) -> float:
    """The GPU a slot asks Ray for: a whole one while there are enough, else a share of one."""
    if not gpus:
        return 0.0
    return 1.0 / math.ceil(slots / gpus)


def _lost(iter_dir: Path, lost: list[str]) -> IterationResult:
    res = IterationResult(status="lost", val_accuracy=None, test_accuracy=None, curves={}, timings={},
                          error=ErrorInfo("remote", None, "WorkerLost",
                                          "the Ray worker or node running this pipeline was lost twice ("
                                          + "; ".join(lost) + "); the pipeline itself is not at fault"),
                          sandbox=SandboxInfo("none", ()), config={"executor": "ray", "lost_workers": lost})
    atomic_write_json(iter_dir / "metrics.json", res.to_json())
    return res


def _harness_error(iter_dir: Path, message: str) -> IterationResult:
    res = IterationResult(status="harness_error", val_accuracy=None, test_accuracy=None, curves={}, timings={},
                          error=ErrorInfo("remote", None, "HarnessError", message), sandbox=SandboxInfo("none", ()))
    atomic_write_json(iter_dir / "metrics.json", res.to_json())
    return res
