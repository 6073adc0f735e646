"""Concurrent requests share one model call: a small asyncio micro-batcher.

    batcher = Batcher(run=model_fn, max_batch=32, max_delay=0.005)
    await batcher.start()
    probs = await batcher.submit(x)        # x: (n, ...) -> model_fn's rows for x, in order
    await batcher.stop()

The first waiting request opens a batch; requests already waiting, and those
that arrive within `max_delay` seconds, join it until it holds `max_batch`
images. The batch waits only while other requests are on their way (announced
with `arriving()` while they upload and decode), so a lone client never pays
the delay. The model runs
in one worker thread, one batch at a time, so the event loop keeps accepting
requests meanwhile (they form the next batch). A request larger than
`max_batch` is cut into pieces that run as batches of their own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np


@dataclass
class BatchStats:
    batches: int = 0         # model calls made
    images: int = 0          # images through them
    largest: int = 0         # most images in one call
    joined: int = 0          # calls that carried images of more than one request

    def to_json(self) -> dict[str, float]:
        mean = self.images / self.batches if self.batches else 0.0
        return {"batches": self.batches, "images": self.images, "largest": self.largest, "joined": self.joined,
                "mean_batch": round(mean, 2)}


class Batcher:
    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int = 32, max_delay: float = 0.005):
        if max_batch < 1 or max_delay < 0:
            raise ValueError("max_batch must be at least 1 and max_delay at least 0")
        self.run, self.max_batch, self.max_delay = run, int(max_batch), float(max_delay)
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._arriving = 0  # requests between arrival and submit (uploading, decoding)

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="automodel-batch")
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request that will submit soon (while it uploads and decodes): batches wait for it."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """The model's output rows for the rows of `x`, possibly computed together with other requests'."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not awaited")
        loop = asyncio.get_running_loop()
        futures = []
        for lo in range(0, len(x), self.max_batch):
            fut = loop.create_future()
            self._queue.put_nowait((x[lo:lo + self.max_batch], fut))
            futures.append(fut)
        parts = await asyncio.gather(*futures)
        return np.concatenate(parts) if len(parts) != 1 else parts[0]

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        carry: deque = deque()
        while True:
            items = [carry.popleft() if carry else await self._queue.get()]
            size = len(items[0][0])
            deadline = loop.time() + self.max_delay
            while size < self.max_batch:
                if carry:
                    item = carry.popleft()
                elif not self._queue.empty():  # already waiting: joins without any delay
                    item = self._queue.get_nowait()
                else:
                    wait = deadline - loop.time()
                    if wait <= 0 or not self._arriving:  # nobody else on the way: run now
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), wait)
                    except asyncio.TimeoutError:
                        break
                if size + len(item[0]) > self.max_batch:
                    carry.appendleft(item)  # opens the next batch
                    break
                items.append(item)
                size += len(item[0])
            items = [(x, f) for x, f in items if not f.cancelled()]  # a client that went away
            if not items:
                continue
            batch = np.concatenate([x for x, _ in items]) if len(items) > 1 else items[0][0]
            try:
                out = await loop.run_in_executor(self._pool, self.run, batch)
            except Exception as err:  # noqa: BLE001 - every waiting request gets the error
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            self.stats.batches += 1
            self.stats.images += len(batch)
            self.stats.largest = max(self.stats.largest, len(batch))
            self.stats.joined += int(len(items) > 1)
            lo = 0
            for x, fut in items:
                if not fut.done():
                    fut.set_result(out[lo:lo + len(x)])
                lo += len(x)
