"""Pretrained timm weights the user already has: found in the Hugging Face hub cache.

Nothing is downloaded (the sandbox has no network). `find_cached()` looks where
huggingface_hub itself would look, and lists the timm models whose weights file
is in the cache, so the Architect can fine-tune one instead of training from
scratch. Only that hub folder is mounted into the sandbox, read-only: never
its parent (~/.cache also holds automodel's decode cache, with labels).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Files timm's loader reads from a hub snapshot, in its order of preference.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
TIMM_PREFIX = "models--timm--"


@dataclass(frozen=True)
class WeightsCache:
    hub_dir: Path | None            # the hub cache folder (mounted read-only), None when there is none
    names: tuple[str, ...] = ()     # timm weight names in it, e.g. ("resnet18.a1_in1k",)


def hub_cache_dir(env: dict[str, str] | None = None) -> Path:
    """Where huggingface_hub keeps downloads: $HF_HUB_CACHE, $HF_HOME/hub, or ~/.cache/huggingface/hub."""
    env = os.environ if env is None else env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _has_weights(model_dir: Path) -> bool:
    snapshots = model_dir / "snapshots"
    if not snapshots.is_dir():
        return False
    return any((snap / f).is_file() for snap in snapshots.iterdir() for f in WEIGHT_FILES)


def find_cached(env: dict[str, str] | None = None) -> WeightsCache:
    """The timm weights available offline, sorted by name; an empty cache when there are none.

    A cache folder that cannot be read counts as empty: the run trains from
    scratch instead of failing before its first iteration."""
    hub = hub_cache_dir(env)
    try:
        if not hub.is_dir():
            return WeightsCache(None)
        names = sorted(d.name[len(TIMM_PREFIX):] for d in hub.iterdir()
                       if d.name.startswith(TIMM_PREFIX) and d.is_dir() and _has_weights(d))
        return WeightsCache(hub.resolve() if names else None, tuple(names))
    except OSError:
        return WeightsCache(None)
