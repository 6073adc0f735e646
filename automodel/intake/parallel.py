"""Run per-file work on all cores, with a progress line on stderr for long jobs.

Decoding thousands of images is the slow part of intake; it is embarrassingly
parallel, so chunks of files go to a process pool. Small jobs stay in-process
because starting workers costs more than it saves.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator, Sequence

SERIAL_BELOW = 200        # items: fewer than this are done in-process
PROGRESS_AFTER_S = 2.0    # seconds before a progress line appears at all


def worker_count() -> int:
    """CPUs this process may use; AUTOMODEL_WORKERS overrides (1 = no pool)."""
    env = os.environ.get("AUTOMODEL_WORKERS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _context():
    # forkserver/spawn rather than fork: the parent may hold threads (torch,
    # tensorboard), and forking a threaded process can deadlock the child.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class Progress:
    """One updating stderr line, shown only once a job has taken > PROGRESS_AFTER_S."""

    def __init__(self, label: str, total: int, enabled: bool = True, stream=None):
        self.label, self.total, self.enabled = label, total, enabled
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.done = 0
        self._last = 0.0
        self._shown = False
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def advance(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        elapsed = now - self.start
        # A terminal gets a line redrawn twice a second; a log file a line every 10 s.
        if elapsed < PROGRESS_AFTER_S or now - self._last < (0.5 if self._tty else 10.0):
            return
        self._last = now
        self._write(f"automodel: {self.label} {self.done}/{self.total} ({elapsed:.0f} s)")

    def close(self) -> None:
        if self.enabled and self._shown:
            elapsed = time.monotonic() - self.start
            self._write(f"automodel: {self.label} {self.done}/{self.total} done in {elapsed:.1f} s", final=True)

    def _write(self, text: str, final: bool = False) -> None:
        self._shown = True
        if self._tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def chunked(n: int, workers: int, max_chunk: int = 256) -> list[tuple[int, int]]:
    """(start, stop) ranges: small enough to balance load and report progress."""
    size = max(16, min(max_chunk, -(-n // max(1, workers * 8))))
    return [(i, min(n, i + size)) for i in range(0, n, size)]


def run_chunks(
    fn: Callable[..., Any],
    jobs: Sequence[tuple],
    sizes: Sequence[int],
    progress: Progress,
    workers: int | None = None,
) -> Iterator[tuple[int, Any]]:
    """Yield (job index, fn(*job)) in completion order; fn must be a module-level function."""
    workers = worker_count() if workers is None else workers
    if workers <= 1 or sum(sizes) < SERIAL_BELOW or len(jobs) < 2:
        for i, job in enumerate(jobs):
            result = fn(*job)
            progress.advance(sizes[i])
            yield i, result
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=_context()) as pool:
        pending = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    result = fut.result()
                    progress.advance(sizes[i])
                    yield i, result
        finally:
            for fut in pending:
                fut.cancel()
