"""Measure how fast this machine trains, before the first pipeline is written.

    figures = measure_throughput(bundle, RunConfig(device="cpu", threads=2), level="bwrap")
    # {"images_per_second": {"16": 2900.0, "32": 1000.0}, "precision": "bf16", "bf16_images_per_second":
    #  {"16": 4900.0}, "input_size": 32, "stages": 3, "batch_size": 128, ...}   (float32 rates; bf16 at WIDTH 16)

A sandboxed child (child_probe.py: trusted harness code only, no generated
code) trains a reference CNN on the real training images for about a second
per width. The Architect sizes the first pipeline from these figures instead of
a table measured on another machine on another day.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from automodel.files import atomic_write_json, read_untrusted_json
from automodel.sandbox.bundle import DataBundle
from automodel.sandbox.levels import INSIDE_DATA, INSIDE_ITER, Mount, layout
from automodel.sandbox.requests import RunConfig, child_request
from automodel.sandbox.supervisor import run_child

WIDTHS = (16, 32)          # two points fit the power law cost ~ width**k well enough
SECONDS_PER_WIDTH = 0.7
PROBE_LIMIT = 120.0        # s: a machine that slow gets the table instead


def measure_throughput(bundle: DataBundle, config: RunConfig, level: str, *, widths=WIDTHS,
                       seconds: float = SECONDS_PER_WIDTH, input_size: int | None = None) -> dict[str, Any] | None:
    """Training images per second of the reference CNN at `widths`; None when the probe failed (never raises
    for that: the caller falls back on its own estimate)."""
    hidden = tuple(p for p in (bundle.source_root, bundle.dir.parent, *config.hidden) if p)
    with tempfile.TemporaryDirectory(prefix="automodel-probe-", dir=bundle.dir.parent) as tmp:
        folder = Path(tmp).resolve()
        work = folder / "work"
        work.mkdir()
        for name in ("stdout.txt", "stderr.txt"):
            (folder / name).write_bytes(b"")
        inside = layout(level, work, bundle.dir, None)
        spec = {"mode": "probe", "data_dir": str(INSIDE_DATA if level == "bwrap" else bundle.dir),
                "out_dir": str(inside.iter_dir), "pipeline_dir": str(INSIDE_ITER if level == "bwrap" else folder),
                "threads": config.slot().cores(), "device": config.device, "seed": config.seed,
                "probe": {"widths": list(widths), "seconds": seconds, "input_size": input_size}}
        atomic_write_json(folder / "spec.json", spec)
        request = child_request(level, folder, work, "spec.json", config, data=[Mount(bundle.dir, INSIDE_DATA)], ro=[],
                                hidden=hidden)
        outcome = run_child(request, level, config.slot(), work=work,
                            deadline=lambda now, launched: ("probe", launched + PROBE_LIMIT))
        result = read_untrusted_json(work / "probe.json") if outcome.exit_code == 0 else {}
    rates = result.get("images_per_second")
    if not isinstance(rates, dict) or not rates or not all(isinstance(v, (int, float)) and v > 0
                                                           for v in rates.values()):
        return None
    return {**result, "seconds": round(outcome.seconds, 1)}
