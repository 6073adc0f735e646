"""What the machine offers: CPU cores, memory, and a GPU if torch sees one."""

from __future__ import annotations

import os

from automodel.core import Hardware
from automodel.errors import UsageError


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
