"""What a person sees while `fit` runs: one line when an iteration starts, one when it ends.

On a terminal a ticker shows the elapsed seconds of the running iteration, or,
when a round's candidates run at once (--parallel), of each running candidate
with its slot. Lines may come from several threads: printing is serialised.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from automodel.core import IterationResult, JournalRecord


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


def pct(x: float | None) -> str:
    return "  -   " if x is None else f"{x:.4f}"


class Progress:
    def __init__(self, stream: TextIO | None = None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self._tick: threading.Thread | None = None
        self._stop = threading.Event()
        self._live = False
        self._lock = threading.RLock()
        self._running: dict[int, tuple[str, float]] = {}  # iteration -> (slot, time.monotonic() it started)

    def _print(self, text: str) -> None:
        if self.quiet:
            return
        with self._lock:
            self._clear_ticker()
            print(text, file=self.stream, flush=True)

    def running(self, n: int, slot: str | None) -> None:
        """Iteration n started running in `slot` (None: it stopped)."""
        with self._lock:
            if slot is None:
                self._running.pop(n, None)
                return
            self._running[n] = (slot, time.monotonic())
            self._print(f"        #{n} runs on {slot}")
            self._start_ticker(n)

    def _ticker_text(self, n: int | None, started: float) -> str:
        now = time.monotonic()
        if self._running:
            return "        running: " + " | ".join(
                f"#{k} {clock(now - t)} ({slot.split(' on ')[0]})" for k, (slot, t) in sorted(self._running.items()))
        return f"        running iteration {n}: {clock(now - started)} "

    def note(self, text: str) -> None:
        self._print(text)

    def warn(self, text: str) -> None:
        """A problem the person should act on: shown even with --quiet."""
        with self._lock:
            self._clear_ticker()
            print(f"automodel: warning: {text}", file=self.stream, flush=True)

    def start(self, n: int, total: int, who: str, what: str, why: str | None) -> None:
        self._print(f"[{n}/{total}] {who}: {what}")
        if why:
            self._print(f"        why: {why}")
        self._start_ticker(n)

    def repair(self, n: int, engineer: str, res: IterationResult) -> None:
        text = (res.error.message if res.error else "") or res.status
        self._print(f"        {res.status}: {text.splitlines()[0][:160] if text else ''}")
        self._print(f"        {engineer} repairs it")
        self._start_ticker(n)

    def finish(self, record: JournalRecord, best: JournalRecord | None, elapsed: float) -> None:
        with self._lock:
            self._stop_ticker()
            self._finish(record, best, elapsed)
            if self._running:  # other candidates of the round still run
                self._start_ticker(None)

    def _finish(self, record: JournalRecord, best: JournalRecord | None, elapsed: float) -> None:
        mark = ("kept" if record.accepted else "failed" if not record.ok else "final refit" if record.kind == "refit"
                else "contended twice, not judged" if record.contended else "discarded")
        line = (
            f"        {record.status}: val {pct(record.val_accuracy)}  test {pct(record.test_accuracy)}"
            f"  -> {mark} | {record.seconds:.0f}s | best val {pct(best.val_accuracy if best else None)}"
            f" (iter {best.iteration if best else '-'}) | elapsed {clock(elapsed)}"
        )
        ev = record.evidence
        if ev:
            chance = not record.accepted and (record.val_accuracy or 0) > (best.val_accuracy if best else 1)
            line += (
                f"\n        vs the best: {ev['gained']} validation images gained, {ev['lost']} lost (z {ev['z']:.1f})"
                + ("; higher, but within what chance gives: not kept" if chance else "")
            )
        message = (record.error or {}).get("message") if not record.ok else None
        if message:
            line += f"\n        error: {message.splitlines()[0][:200]}"
        self._print(line)

    # ---- ticker (terminals only)
    def _start_ticker(self, n: int | None) -> None:
        with self._lock:
            self._stop_ticker()
            if self.quiet or not getattr(self.stream, "isatty", lambda: False)():
                return
            stop = self._stop = threading.Event()
            started = time.monotonic()

            def run() -> None:
                while not stop.wait(1.0):
                    with self._lock:
                        if stop.is_set():
                            return
                        self.stream.write("\r" + self._ticker_text(n, started)[:150])
                        self.stream.flush()
                        self._live = True

            self._tick = threading.Thread(target=run, daemon=True)
            self._tick.start()

    def _stop_ticker(self) -> None:
        with self._lock:
            if self._tick is not None:
                self._stop.set()  # the thread exits at its next check of its event (no join: it may wait on
                self._tick = None  # the lock held here)
            self._clear_ticker()

    def _clear_ticker(self) -> None:
        if self._live:
            self.stream.write("\r" + " " * 150 + "\r")
            self._live = False

    def close(self) -> None:
        self._stop_ticker()
