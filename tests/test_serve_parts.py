"""The pieces of `automodel serve` in process: the micro-batcher and the numpy preprocessing.

The batcher's model is a function that blocks until the test lets it go, so
which requests share a call is decided by the test, not by timing.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from automodel.outputs.batcher import Batcher
from automodel.outputs.servemodel import BadImage, Preprocessing


class GatedModel:
    """Doubles its input; each call waits for the gate and records its batch size."""

    def __init__(self):
        self.calls: list[int] = []
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(len(x))
        self.entered.set()
        assert self.gate.wait(10)
        return x * 2


def test_requests_waiting_during_a_model_call_share_the_next_one():
    async def scenario():
        model = GatedModel()
        batcher = Batcher(model, max_batch=8, max_delay=0.0)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit(np.array([[1.0]])))
        await asyncio.get_running_loop().run_in_executor(None, model.entered.wait, 10)
        # Five requests arrive while the first call runs: they wait, then go together.
        rest = [asyncio.ensure_future(batcher.submit(np.array([[float(i)], [float(i) + 0.5]]))) for i in range(5)]
        await asyncio.sleep(0.05)
        model.gate.set()
        outs = await asyncio.gather(first, *rest)
        await batcher.stop()
        return model.calls, outs, batcher.stats

    calls, outs, stats = asyncio.run(scenario())
    # 1 image, then 4 requests of 2 (8 = max_batch), then the fifth request alone.
    assert calls == [1, 8, 2]
    assert outs[0].tolist() == [[2.0]]
    for i, out in enumerate(outs[1:]):
        assert out.tolist() == [[2.0 * i], [2.0 * i + 1.0]]  # each request gets its own rows back, in order
    assert stats.batches == 3 and stats.images == 11 and stats.largest == 8 and stats.joined == 1


def test_a_request_larger_than_a_batch_is_cut_and_a_model_error_reaches_every_caller():
    async def scenario():
        seen: list[int] = []

        def model(x):
            seen.append(len(x))
            return x + 1

        batcher = Batcher(model, max_batch=4, max_delay=0.001)
        await batcher.start()
        out = await batcher.submit(np.arange(10, dtype=np.float32)[:, None])
        await batcher.stop()

        def broken(x):
            raise RuntimeError("onnxruntime failed")

        failing = Batcher(broken, max_batch=4, max_delay=0.01)
        await failing.start()
        results = await asyncio.gather(failing.submit(np.zeros((1, 1))), failing.submit(np.zeros((2, 1))),
                                       return_exceptions=True)
        await failing.stop()
        return seen, out, results

    seen, out, results = asyncio.run(scenario())
    assert seen == [4, 4, 2] and out[:, 0].tolist() == list(range(1, 11))
    assert all(isinstance(r, RuntimeError) and "onnxruntime failed" in str(r) for r in results)


def test_a_batch_waits_only_for_requests_on_their_way():
    async def scenario():
        calls: list[int] = []

        def model(x):
            calls.append(len(x))
            return x

        batcher = Batcher(model, max_batch=8, max_delay=30.0)
        await batcher.start()
        # Alone: answered at once, not after the 30 s delay.
        await asyncio.wait_for(batcher.submit(np.zeros((1, 1))), 5)
        # One request is still decoding: the first waits for it and they share a call.
        with batcher.arriving():
            first = asyncio.ensure_future(batcher.submit(np.zeros((1, 1))))
            await asyncio.sleep(0.1)
            assert not first.done()
            second = batcher.submit(np.ones((1, 1)))
        await asyncio.wait_for(asyncio.gather(first, second), 5)
        await batcher.stop()
        return calls

    assert asyncio.run(scenario()) == [1, 2]


def torch_reference(images: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """What the export's parity check replays in torch: [0, 1], resize (antialiased when shrinking), normalise."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    h, w = pre.input_size
    if (x.shape[2], x.shape[3]) != (h, w):
        shrink = h < x.shape[2] or w < x.shape[3]
        x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
    mean = torch.tensor(pre.mean).view(1, -1, 1, 1)
    std = torch.tensor(pre.std).view(1, -1, 1, 1)
    return ((x - mean) / std).numpy()


@pytest.mark.parametrize("work, size", [((128, 128), (112, 112)), ((128, 128), (64, 64)), ((28, 28), (32, 32)),
                                        ((28, 28), (28, 28))])
def test_numpy_preprocessing_matches_the_torch_replay_of_the_export(materialize, work, size):
    photos = sorted((materialize("hymenoptera", "flat", 3)).rglob("*.jpg"))
    channels = 3 if work[0] > 64 else 1
    pre = Preprocessing(work, channels, size, (0.485, 0.456, 0.406)[:channels], (0.229, 0.224, 0.225)[:channels])
    images = np.stack([pre.decode(p.read_bytes(), 10**8) for p in photos])
    assert images.shape == (len(photos), *work, channels) and images.dtype == np.uint8
    ours = pre.inputs(images)
    assert ours.shape == (len(photos), channels, *size) and ours.dtype == np.float32
    assert np.abs(ours - torch_reference(images, pre)).max() < 1e-4


def test_the_pixel_limit_is_read_from_the_header_before_decoding(tmp_path):
    pre = Preprocessing((28, 28), 1, (28, 28), (0.5,), (0.5,))
    path = tmp_path / "wide.png"
    Image.new("L", (3000, 2000)).save(path)
    data = path.read_bytes()
    assert pre.decode(data, 6_000_000).shape == (28, 28, 1)
    with pytest.raises(BadImage) as err:
        pre.decode(data, 5_999_999)
    assert err.value.status == 413 and "3000x2000" in str(err.value)
    with pytest.raises(BadImage) as err:
        pre.decode(data[: len(data) // 2], 6_000_000)
    assert err.value.status == 400 and "truncated" in str(err.value)
