"""`automodel weights fetch` and `fit --download-weights` against a local hub (tests/hub_server.py).

HF_ENDPOINT points huggingface_hub at a server in this process that serves a
small real checkpoint in the hub's layout: the state dict of a freshly
initialised timm resnet18, as safetensors. The download goes through timm's
loader and huggingface_hub's client, into HF_HUB_CACHE; then `fit` finds the
weights there and fine-tunes them in the sandbox, which has no network.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hub_server import COMMIT, HubServer
from test_pretrained import write_hub_cache

from automodel.hparams import read_hparams
from automodel.testing.serve_client import free_port

NAME = "resnet18.a1_in1k"           # what timm resolves "resnet18" to
FILE = f"/timm/{NAME}/resolve/main/model.safetensors"


@pytest.fixture(scope="module")
def checkpoint() -> tuple[bytes, dict[str, torch.Tensor]]:
    import timm
    from safetensors.torch import save

    torch.manual_seed(1234)
    state = {k: v.contiguous() for k, v in timm.create_model("resnet18", num_classes=1000).state_dict().items()}
    return save(state), state


@pytest.fixture
def hub(checkpoint):
    with HubServer({f"timm/{NAME}": {"model.safetensors": checkpoint[0]}}) as server:
        yield server


def hf_env(endpoint: str, tmp_path) -> dict[str, str]:
    return {"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}


def test_weights_fetch_downloads_through_timm_into_the_hub_cache(hub, checkpoint, cli, tmp_path):
    env = hf_env(hub.url, tmp_path)
    proc = cli("weights", "fetch", "resnet18", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"pretrained weights {NAME} (resnet18): downloaded" in proc.stdout
    # huggingface_hub's protocol: HEAD for the commit and ETag, then GET for the bytes.
    assert [r for r in hub.requests if r[1] == FILE] == [("HEAD", FILE), ("GET", FILE)]
    repo = tmp_path / "hf" / "hub" / f"models--timm--{NAME}"
    assert (repo / "refs" / "main").read_text() == COMMIT
    assert (repo / "snapshots" / COMMIT / "model.safetensors").read_bytes() == checkpoint[0]
    listed = cli("weights", "list", "--json", env=env)
    assert json.loads(listed.stdout)["names"] == [NAME]

    hub.requests.clear()
    again = cli("weights", "fetch", NAME, env=env)
    assert again.returncode == 0 and f"pretrained weights {NAME}: already in the cache" in again.stdout
    assert [r for r in hub.requests if r[1] == FILE] == [("HEAD", FILE)]  # checked, not downloaded again

    unknown = cli("weights", "fetch", "resnet18.nope", env=env)
    assert unknown.returncode == 10 and "timm has no pretrained weights called 'resnet18.nope'" in unknown.stderr
    assert "resnet18.a1_in1k" in unknown.stderr  # the known ones are listed
    absent = cli("weights", "fetch", "resnet26d", env=env)
    assert absent.returncode == 10 and "has no weights file for resnet26d" in absent.stderr
    assert "Traceback" not in unknown.stderr + absent.stderr


def test_offline_fails_fast_naming_the_weights_and_the_command(materialize, cli, tmp_path):
    env = hf_env(f"http://127.0.0.1:{free_port()}", tmp_path)  # nothing listens there
    proc = cli("weights", "fetch", "resnet18", env=env, timeout=120)
    assert proc.returncode == 10, proc.stderr[-2000:]
    assert f"Cannot download the pretrained weights {NAME}" in proc.stderr and "cannot be reached" in proc.stderr
    assert f"run `automodel weights fetch {NAME}`" in proc.stderr and "Traceback" not in proc.stderr

    photos = materialize("hymenoptera", "imagefolder", 8)
    ws = tmp_path / "ws"
    fit = cli("fit", photos, "--download-weights", "--iters", 1, "--time-per-iter", 5, "--workspace", ws,
              "--name", "p", env=env, timeout=300)
    assert fit.returncode == 10 and f"automodel weights fetch {NAME}" in fit.stderr and "Traceback" not in fit.stderr
    assert not (ws / "p").exists()  # failed before the run folder

    # Weights already in the cache are enough when the hub cannot be asked.
    write_hub_cache(tmp_path / "hf" / "hub")
    cached = cli("weights", "fetch", "resnet18", env=dict(env, HF_HUB_OFFLINE="1"))
    assert cached.returncode == 0 and "already in the cache (the hub could not be asked" in cached.stdout


@pytest.mark.slow
def test_fit_download_weights_fine_tunes_the_fetched_backbone_in_the_sandbox(hub, checkpoint, materialize, cli,
                                                                              tmp_path):
    photos = materialize("hymenoptera", "imagefolder", 8)
    ws = tmp_path / "ws"
    env = hf_env(hub.url, tmp_path)
    proc = cli("fit", photos, "--download-weights", "--agent", "expert", "--iters", 1, "--time-per-iter", 6,
               "--workspace", ws, "--name", "p", "--device", "cpu", env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hub_dir = (tmp_path / "hf" / "hub").resolve()
    assert f"pretrained weights {NAME} (resnet18): downloaded" in proc.stderr
    assert f"pretrained weights in {hub_dir}: {NAME}" in proc.stderr
    assert f"Pretrained backbone: {NAME}" in proc.stdout  # fit reports the backbone it used
    assert ("GET", FILE) in hub.requests
    model = read_hparams((ws / "p" / "iter_001" / "model.py").read_text())
    assert model["ARCH"] == "resnet18" and model["PRETRAINED"] == NAME
    metrics = json.loads((ws / "p" / "iter_001" / "metrics.json").read_text())
    assert metrics["status"] == "ok", metrics.get("error")

    # The sandbox started from the served weights: the fine-tuned first convolution still looks like them,
    # and not like another initialisation of the same network.
    import timm

    tuned = torch.load(ws / "p" / "best" / "model.pt", map_location="cpu", weights_only=True)["net.conv1.weight"]
    other = timm.create_model("resnet18", num_classes=1000).state_dict()["conv1.weight"]

    def corr(a, b):
        return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])

    served = checkpoint[1]["conv1.weight"]
    assert corr(tuned, served) > 0.5 > abs(corr(tuned, other))
