"""Several candidates at once: resource slots, a pool of workers, commits in iteration order.

With `fit --parallel K` a round's candidates run K at a time. Each runs in a
slot, a 1/K share of the machine (cores/K threads, a memory share, a GPU or a
share of one), so candidates that are compared with each other got the same
compute. The round's iteration numbers and decisions are reserved before any
of them runs (run.json "pending_round"); each candidate, when its run ends,
writes what it produced (produced.json in its folder) and then waits for its
turn: records reach the journal in iteration order, as if the round had run
one after another. `resume` after a kill commits what was produced and re-runs
only the candidates that had not finished.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from automodel.core import Decision, IterationResult, JournalRecord, Usage
from automodel.files import read_json
from automodel.sandbox.limits import memory_share
from automodel.sandbox.supervisor import ChildCancelled, allow_children, cancel_children
from automodel.search.plan import Placement
from automodel.search.workspace import PRODUCED


@dataclass(frozen=True)
class WorkerSlot:
    """One candidate's share of the machine (recorded in its journal record)."""

    index: int                 # 0-based
    count: int                 # slots in the pool
    threads: int               # torch/OMP threads of the child
    memory: int | None         # bytes for the child's tree (None: the sandbox default, 75% of RAM)
    gpu: str | None = None     # CUDA_VISIBLE_DEVICES of the child (None: as the parent sees them)
    executor: str = "local"
    node: str = ""             # where it ran

    def label(self) -> str:
        gpu = f", GPU {self.gpu}" if self.gpu is not None else ""
        return (f"slot {self.index + 1}/{self.count} ({self.threads} thread{'s' if self.threads > 1 else ''}"
                f"{gpu}) on {self.node or socket.gethostname()}")


def make_slots(parallel: int, cores: int | None = None, gpus: int = 0, executor: str = "local") -> list[WorkerSlot]:
    """K equal shares of this machine: threads and memory split K ways, GPUs dealt round-robin (several
    slots share a GPU when K exceeds the GPUs)."""
    cores = cores or os.cpu_count() or 1
    threads = max(1, cores // parallel)
    memory = memory_share(1 / parallel) if parallel > 1 else None
    node = socket.gethostname()
    return [WorkerSlot(i, parallel, threads, memory, str(i % gpus) if gpus else None, executor, node)
            for i in range(parallel)]


@dataclass(frozen=True)
class Job:
    """One reserved run of a round: what it does and with what time (run.json "pending_round")."""

    iteration: int
    parent: int | None
    decision: Decision | None
    time_limit: float
    place: Placement | None         # None: the greedy loop's iteration
    given_from: int | None = None   # run this iteration's pipeline as it is (a promotion)

    def to_json(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "parent": self.parent,
                "decision": asdict(self.decision) if self.decision else None, "time_limit": self.time_limit,
                "place": asdict(self.place) if self.place else None, "given_from": self.given_from}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Job":
        decision = Decision(**data["decision"]) if data.get("decision") else None
        return cls(int(data["iteration"]), data.get("parent"), decision, float(data["time_limit"]),
                   Placement(**data["place"]) if data.get("place") else None, data.get("given_from"))


@dataclass
class Produced:
    """What one run of a round produced, kept in its folder until its record is committed."""

    job: Job
    result: IterationResult
    repairs: int
    usage: Usage
    seconds: float
    slot: str | None = None
    attempts: list[JournalRecord] = field(default_factory=list)  # failed or contended attempts before it

    def to_json(self) -> dict[str, Any]:
        return {"job": self.job.to_json(), "result": self.result.to_json(), "repairs": self.repairs,
                "usage": asdict(self.usage), "seconds": self.seconds, "slot": self.slot,
                "attempts": [a.to_json() for a in self.attempts]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Produced":
        return cls(Job.from_json(data["job"]), IterationResult.from_json(data["result"]), int(data["repairs"]),
                   Usage(**data["usage"]), float(data["seconds"]), data.get("slot"),
                   [JournalRecord.from_json(a) for a in data.get("attempts") or []])


def read_produced(folder: Path) -> Produced | None:
    """The outcome a run of a round left in its folder before its record was committed, if it is whole."""
    try:
        return Produced.from_json(read_json(folder / PRODUCED)) if (folder / PRODUCED).is_file() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


class SlotPool:
    """Hands out free slots; a job holds one only while its pipeline runs."""

    def __init__(self, slots: list[WorkerSlot]):
        self.slots = slots
        self._free: queue.Queue[WorkerSlot] = queue.Queue()
        for slot in slots:
            self._free.put(slot)

    @contextmanager
    def slot(self) -> Iterator[WorkerSlot]:
        slot = self._free.get()
        try:
            yield slot
        finally:
            self._free.put(slot)


class Cancelled(Exception):
    """Another job of the round failed, or the user pressed Ctrl-C: stop waiting."""


class CommitOrder:
    """Lets iteration n commit only after every iteration before it did."""

    def __init__(self, next_iteration: Callable[[], int]):
        self.next_iteration = next_iteration
        self.cond = threading.Condition()
        self.cancelled = False

    def wait_turn(self, n: int) -> None:
        with self.cond:
            while not self.cancelled and self.next_iteration() != n:
                self.cond.wait(0.5)
            if self.cancelled:
                raise Cancelled()

    def committed(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def cancel(self) -> None:
        with self.cond:
            self.cancelled = True
            self.cond.notify_all()


def run_jobs(jobs: list[Callable[[], None]], workers: int, order: CommitOrder,
             on_cancel: Callable[[], None] | None = None) -> None:
    """Run the jobs on `workers` threads until all end. The first error (or Ctrl-C) cancels the others: their
    sandboxed children are killed (and `on_cancel` cancels what an executor runs elsewhere, Ray tasks),
    nothing waits for a turn any more, and the error is raised here."""
    allow_children()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="candidate")
    futures = [pool.submit(job) for job in jobs]
    try:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None
                  and not isinstance(f.exception(), (Cancelled, ChildCancelled))]
        if failed:
            raise failed[0].exception()
    except BaseException:
        order.cancel()
        cancel_children()
        if on_cancel is not None:
            on_cancel()
        for f in futures:
            f.cancel()
        pool.shutdown(wait=True)
        allow_children()  # the round is over: children started later (a resumed round, a refit) may run
        raise
    pool.shutdown(wait=True)
