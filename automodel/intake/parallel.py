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
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator, Sequence

# A pool costs tens of ms to start (fork) and pays off only when the work is
# bigger: many files, or big files (decoding cost grows with compressed bytes).
PARALLEL_MIN_ITEMS = 1000
PARALLEL_MIN_BYTES = 8_000_000
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


def use_pool(n_items: int, total_bytes: int, workers: int | None = None) -> bool:
    workers = worker_count() if workers is None else workers
    return workers > 1 and n_items >= 16 and (n_items >= PARALLEL_MIN_ITEMS or total_bytes >= PARALLEL_MIN_BYTES)


def _context():
    # fork starts workers in milliseconds; forkserver/spawn re-import numpy and
    # Pillow in every worker (~0.5 s here), which costs more than small datasets
    # take to decode. The workers only run Pillow/numpy code, never torch or
    # OpenMP, which is what makes fork unsafe in threaded parents (PyTorch's own
    # DataLoader forks the same way). macOS frameworks do not survive fork.
    method = os.environ.get("AUTOMODEL_MP_START", "").strip()
    methods = multiprocessing.get_all_start_methods()
    if method not in methods:
        method = "fork" if sys.platform.startswith("linux") and "fork" in methods else (
            "forkserver" if "forkserver" in methods else "spawn")
    return multiprocessing.get_context(method)


class ProgressLine:
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
    progress: ProgressLine,
    workers: int,
    parallel: bool,
) -> Iterator[tuple[int, Any]]:
    """Yield (job index, fn(*job)) in completion order; fn must be a module-level function."""
    if not parallel or workers <= 1 or len(jobs) < 2:
        for i, job in enumerate(jobs):
            result = fn(*job)
            progress.advance(sizes[i])
            yield i, result
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=_context()) as pool:
        with warnings.catch_warnings():
            # Python >= 3.12 warns on every fork of a threaded process; see _context for why it is fine here.
            warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
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
