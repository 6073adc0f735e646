"""Reading what a sandboxed child wrote: claims, bounded and never followed through links.

events.jsonl says which phase the child reached; the parent notes WHEN it read
each phase on its own clock and uses the events only to move the preflight
deadline to the training one (which can only make its own time shorter, see
iteration.py) and to split the child's run into stages, each boundary being the
child's stamp clamped into what the parent observed (EventLog.when).
curves.jsonl becomes the training curves; error.json names the module to
blame; child.json says whether train() was interrupted.
"""

from __future__ import annotations

import json
import math
import os
import stat
import time
from pathlib import Path
from typing import Any

import numpy as np

from automodel.core import MODULES
from automodel.files import read_untrusted_json, read_untrusted_text

MAX_CURVE_POINTS = 200        # per tag, after downsampling
MAX_CURVE_TAGS = 32
MAX_LOG_BYTES = 32 * 2**20    # events/curves files bigger than this are read only this far


def jsonl(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def number(value) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def read_curves(path: Path) -> dict[str, list[list[float]]]:
    """Training curves from curves.jsonl, preflight excluded, <= MAX_CURVE_POINTS per tag."""
    series: dict[str, list[list[float]]] = {}
    for rec in jsonl(read_untrusted_text(path, MAX_LOG_BYTES)):
        if rec.get("phase") != "train":
            continue
        tag, step, value = rec.get("tag"), number(rec.get("step")), number(rec.get("value"))
        if not isinstance(tag, str) or step is None or value is None or len(tag) > 64:
            continue
        if tag not in series and len(series) >= MAX_CURVE_TAGS:
            continue
        series.setdefault(tag, []).append([int(step), value])
    return {tag: downsample(points) for tag, points in series.items()}


def downsample(points: list[list[float]], limit: int = MAX_CURVE_POINTS) -> list[list[float]]:
    """Evenly spaced points, first and last kept."""
    if len(points) <= limit:
        return points
    idx = np.unique(np.linspace(0, len(points) - 1, limit).round().astype(int))
    return [points[i] for i in idx]


class EventLog:
    """Incremental reader of the child's events.jsonl: when (parent's clock) each phase was first read."""

    def __init__(self, path: Path):
        self.path = path
        self.wall: dict[str, float] = {}        # phase -> the child's claimed time.time()
        self.seen_at: dict[str, float] = {}     # phase -> parent's clock when first read
        self.extra: dict[str, dict] = {}
        self.last_phase: str | None = None
        self._offset = 0

    def poll(self) -> None:
        if self._offset >= MAX_LOG_BYTES:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            return
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # a fifo or device planted by the child
                return
            fh.seek(self._offset)
            chunk = fh.read(MAX_LOG_BYTES - self._offset)
        end = chunk.rfind(b"\n")
        if end < 0:
            return
        self._offset += end + 1
        now = time.time()
        for rec in jsonl(chunk[:end + 1].decode("utf-8", "replace")):
            phase = rec.get("phase")
            if not isinstance(phase, str) or len(phase) > 64:
                continue
            self.last_phase = phase
            if phase not in self.seen_at:
                self.seen_at[phase] = now
                wall = number(rec.get("wall"))
                if wall is not None:
                    self.wall[phase] = wall
                self.extra[phase] = {k: v for k, v in rec.items()
                                     if isinstance(v, (int, float, str)) and k not in ("phase", "wall")}

    def when(self, phase: str, not_before: float) -> float | None:
        """When `phase` happened: the child's stamp, kept between `not_before` and the moment the parent read it.

        The parent reads the log every poll, later still when the child holds
        every core, so its own reading alone can be late by a fraction of a
        second; a stamp outside that window is a lie and is clamped into it."""
        seen = self.seen_at.get(phase)
        if seen is None:
            return None
        return min(seen, max(not_before, self.wall.get(phase, seen)))


def tail(text: str, lines: int = 30, chars: int = 4000) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])[-chars:]


def child_error(path: Path) -> dict[str, Any] | None:
    """The child's error.json, cut to size, the module checked against the three names."""
    raw = read_untrusted_json(path)
    if not raw:
        return None
    module = raw.get("module")
    return {
        "phase": str(raw.get("phase", "train"))[:32],
        "module": module if module in MODULES else None,
        "type": str(raw.get("type", "Error"))[:100],
        "message": str(raw.get("message", ""))[:2000],
        "traceback": tail(str(raw.get("traceback", ""))),
    }


def child_report(path: Path) -> dict[str, Any]:
    """child.json: {"interrupted", "used_checkpoint"} as the child claims them."""
    return read_untrusted_json(path, 100_000)
