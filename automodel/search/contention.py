"""Whether a run got a fair share of the machine, from the compute its metrics.json records.

On a shared or virtual machine the same pipeline can get half the training
steps of its parent (measured: 860 vs 360 steps in two 60 s runs minutes
apart, with the hypervisor stealing up to 66% of the CPU). Such a run says
little about the edit it carries: the budget search runs it again, and never
keeps or rejects an edit on a contended run alone.
"""

from __future__ import annotations

from typing import Any

SLOWER_THAN_PARENT = 0.7   # images/s below this fraction of the parent's...
LESS_CPU = 0.8             # ...with CPU use below this fraction of the parent's (a wider model is slower
                           # too, but still keeps the cores busy)
STOLEN = 0.3               # or this share of the machine's CPU time taken by the host


def contention(compute: dict[str, Any], parent_compute: dict[str, Any] | None) -> str | None:
    """Why a run was contended, or None when its compute looks fair (or is unknown)."""
    steal = compute.get("steal_share")
    if isinstance(steal, (int, float)) and steal > STOLEN:
        return f"the host took {steal:.0%} of the CPU time during training"
    rate = compute.get("images_per_second")
    parent_rate = (parent_compute or {}).get("images_per_second")
    if isinstance(rate, (int, float)) and isinstance(parent_rate, (int, float)) and parent_rate > 0:
        cpu, parent_cpu = compute.get("cpu_utilisation"), (parent_compute or {}).get("cpu_utilisation")
        starved = not (isinstance(cpu, (int, float)) and isinstance(parent_cpu, (int, float))) or (
            cpu < LESS_CPU * parent_cpu)
        if rate < SLOWER_THAN_PARENT * parent_rate and starved:
            return f"it trained at {rate:,.0f} images/s, {rate / parent_rate:.0%} of its parent's {parent_rate:,.0f}"
    return None
