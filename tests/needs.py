"""Skips that CI turns into failures.

A test that needs something a machine may lack (the shared data folder,
bubblewrap, a sandbox level, Chromium) calls `missing(what, reason)`. On a
developer's machine that skips the test; where `AUTOMODEL_REQUIRE` lists `what`
(`.ci/run` sets `AUTOMODEL_REQUIRE=shared,bwrap,unshare,chromium,ray`), it fails, so a
missing install step shows up as a red CI instead of a quiet skip.
"""

from __future__ import annotations

import os

import pytest

ENV = "AUTOMODEL_REQUIRE"


def required() -> set[str]:
    return {part.strip() for part in os.environ.get(ENV, "").split(",") if part.strip()}


def missing(what: str, reason: str) -> None:
    """Skip (or, where `what` is required, fail) the calling test."""
    if what in required():
        pytest.fail(f"{reason} ({ENV} requires {what!r})", pytrace=False)
    pytest.skip(reason)


def need_level(level: str) -> None:
    """The sandbox level must work here (bwrap counts as `bwrap`, unshare as `unshare`)."""
    from automodel.sandbox.probe import probe_level

    result = probe_level(level)
    if not result.works:
        missing(level, f"sandbox level {level} does not work here: {result.reason}")
