"""What the machine offers: CPU cores, memory, and a GPU if torch sees one."""

from __future__ import annotations

import os
from typing import Any

from automodel.core import Hardware
from automodel.errors import UsageError

# Training images per second per CPU core of the expert's first small CNN (3 stages, WIDTH 32) at
# 32 px, measured on one thread with `benchmarks/recipes.py --throughput`; cost grows with the pixels.
CPU_IMAGES_PER_CORE_S = 1000.0
# Share of cores x the one-thread rate kept end to end through the runner (1225 images/s on 2 cores).
CPU_PARALLEL_EFFICIENCY = 0.62
# One GPU, same network and size. NOT measured (no GPU where this was written): a rough guess only
# used by the feasibility estimates, which say so.
GPU_IMAGES_PER_S = 20000.0


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def memory_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        return None
    return None


def resolve_device(requested: str) -> str:
    """"auto" picks cuda when torch can use it; "cuda" without a GPU is an error with the fix."""
    if requested not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, not {requested!r}.")
    if requested == "cpu":
        return "cpu"
    import torch  # imported here: it costs over a second

    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise UsageError(
            "--device cuda was given but torch sees no usable GPU (torch.cuda.is_available() is False). Use "
            "--device cpu or auto, or install a CUDA build of torch."
        )
    return "cpu"


def detect(device: str) -> Hardware:
    gpu_name = gpu_mem = None
    if device == "cuda":
        import torch

        props = torch.cuda.get_device_properties(0)
        gpu_name, gpu_mem = props.name, round(props.total_memory / 1024**3, 1)
    return Hardware(
        cpu_cores=cpu_cores(), device=device, gpu_name=gpu_name, gpu_memory_gb=gpu_mem, memory_gb=memory_gb()
    )


def gpu_count(device: str) -> int:
    """CUDA devices this process sees (0 on a CPU run)."""
    if device != "cuda":
        return 0
    import torch

    return torch.cuda.device_count()


def training_rate(side: int, hw: Hardware) -> float:
    """Estimated training images per second of a small CNN at `side` x `side` px on `hw`."""
    pixels = (32.0 / max(1, int(side))) ** 2
    if hw.device == "cuda":
        return GPU_IMAGES_PER_S * pixels
    return CPU_IMAGES_PER_CORE_S * pixels * max(1, hw.cpu_cores) * CPU_PARALLEL_EFFICIENCY


def bf16_speedup(measured: dict[str, Any] | None) -> float | None:
    """bf16 autocast's speed over float32 at the throughput probe's first width, when the probe chose bf16
    (precision "bf16"); None otherwise."""
    if (measured or {}).get("precision") != "bf16":
        return None
    bf16 = measured.get("bf16_images_per_second") or {}
    width, rate = next(iter(bf16.items()), (None, None))
    fp32 = (measured.get("images_per_second") or {}).get(width)
    return float(rate) / float(fp32) if rate and fp32 else None
