"""Cached pretrained weights: found where huggingface_hub keeps them, mounted read-only, fine-tuned.

No model hub is reachable here, so the cache is written as huggingface_hub lays
it out (refs/main -> snapshots/<commit>/model.safetensors) with the state dict
of a freshly initialised timm resnet18: the real file format, read by timm's
own loader inside the sandbox.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from automodel.hparams import read_hparams
from automodel.weights import WeightsCache, find_cached, hub_cache_dir

NAME = "resnet18.a1_in1k"
COMMIT = "0" * 40


def write_hub_cache(hub: Path) -> None:
    """A hub cache holding timm's resnet18.a1_in1k."""
    import timm
    from safetensors.torch import save_file

    repo = hub / f"models--timm--{NAME}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    state = {k: v.contiguous() for k, v in timm.create_model("resnet18", num_classes=1000).state_dict().items()}
    save_file(state, str(snapshot / "model.safetensors"))


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    hub = tmp_path_factory.mktemp("hf") / "hub"
    write_hub_cache(hub)
    return hub


def test_cache_location_follows_huggingface_hub(tmp_path):
    assert hub_cache_dir({"HF_HUB_CACHE": str(tmp_path / "a")}) == tmp_path / "a"
    assert hub_cache_dir({"HF_HOME": str(tmp_path / "h")}) == tmp_path / "h" / "hub"
    assert hub_cache_dir({"XDG_CACHE_HOME": str(tmp_path / "x")}) == tmp_path / "x" / "huggingface" / "hub"


def test_only_timm_models_with_a_weights_file_are_listed(hub, tmp_path):
    found = find_cached({"HF_HUB_CACHE": str(hub)})
    assert found.names == (NAME,) and found.hub_dir == hub.resolve()
    # A download that never finished (no snapshot file) and a non-timm repository are not weights we can use.
    other = tmp_path / "hub"
    shutil.copytree(hub, other, symlinks=True)
    (other / "models--timm--convnext_nano.in12k" / "snapshots" / COMMIT).mkdir(parents=True)
    (other / "models--bert-base-uncased" / "snapshots" / COMMIT).mkdir(parents=True)
    (other / "models--bert-base-uncased" / "snapshots" / COMMIT / "model.safetensors").write_bytes(b"x")
    assert find_cached({"HF_HUB_CACHE": str(other)}).names == (NAME,)
    assert find_cached({"HF_HUB_CACHE": str(tmp_path / "missing")}).hub_dir is None
    (tmp_path / "a-file").write_text("not a folder")
    assert find_cached({"HF_HUB_CACHE": str(tmp_path / "a-file")}) == WeightsCache(None)


def test_an_unreadable_cache_counts_as_empty(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    hub.mkdir()

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", refuse)  # root reads any folder: refuse the listing itself
    assert find_cached({"HF_HUB_CACHE": str(hub)}) == WeightsCache(None)


def test_fit_fine_tunes_cached_weights_inside_the_sandbox(hub, materialize, cli, tmp_path):
    photos = materialize("hymenoptera", "imagefolder", 8)
    ws = tmp_path / "ws"
    env = {"HF_HUB_CACHE": str(hub)}
    proc = cli("fit", photos, "--agent", "expert", "--iters", 1, "--time-per-iter", 6, "--workspace", ws,
               "--name", "p", env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"pretrained weights in {hub.resolve()}: {NAME}" in proc.stderr
    model = read_hparams((ws / "p" / "iter_001" / "model.py").read_text())
    assert model["ARCH"] == "resnet18" and model["PRETRAINED"] == NAME
    metrics = json.loads((ws / "p" / "iter_001" / "metrics.json").read_text())
    assert metrics["status"] == "ok", metrics.get("error")

    # The weights really are read in the sandbox: with the cached file corrupted, the same
    # pipeline fails while building the model, and says which file.
    broken = tmp_path / "broken" / "hub"
    shutil.copytree(hub, broken)
    weights = broken / f"models--timm--{NAME}" / "snapshots" / COMMIT / "model.safetensors"
    weights.write_bytes(b"not a safetensors file")
    proc = cli("run", photos, "--pipeline", ws / "p" / "iter_001", "--time-limit", 5, "--out", tmp_path / "r",
               "--json", env={"HF_HUB_CACHE": str(broken)})
    result = json.loads(proc.stdout)
    assert proc.returncode == 1 and result["status"] != "ok"
    assert result["error"]["module"] == "model", result["error"]
