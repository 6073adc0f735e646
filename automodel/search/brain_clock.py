"""The seconds a run spends waiting for its brain (an LLM's replies, mostly).

A budget given as `--iters` x `--time-per-iter` is a compute budget: the greedy
loop gives every iteration its full training time however long the model took
to answer, and the budget search must not starve a slow model's candidates
either. The loop wraps its brain in TimedBrain and, for such budgets, charges
only the time not spent in the brain (Loop._spent). A `--time-budget` is wall
time the user waits: there everything counts.
"""

from __future__ import annotations

import time
from typing import Any

# The roles that may wait on a model; take_calls, start and the like are bookkeeping.
TIMED_ROLES = frozenset({"architect", "analyst", "analyst_round", "engineer", "summarize", "scale"})


class TimedBrain:
    """Delegates to `inner` and adds up the seconds its roles take (this session only)."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in TIMED_ROLES:
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.monotonic()
            try:
                return attr(*args, **kwargs)
            finally:
                self.seconds += time.monotonic() - start

        return timed
