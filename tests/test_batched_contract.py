"""The batched data contract (interfaces/data.py): precise messages for wrong batch transforms, and the
batched path giving the same eval tensors and predictions as the per-image path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hostile.kit import fashion_bundle, fast_config, make_iter

from automodel.agents.expert.architect import write_pipeline
from automodel.core import Brief, Hardware
from automodel.sandbox.iteration import run_iteration

SANDBOX = Path(__file__).resolve().parents[1] / "automodel" / "sandbox"
REFERENCE_DATA = Path(__file__).resolve().parents[1] / "pipelines" / "reference" / "data.py"


@pytest.fixture(scope="module")
def harness():
    """The stand-alone modules the sandboxed child imports (child_checks, child_data), imported the same way."""
    sys.path.insert(0, str(SANDBOX))
    try:
        import child_checks
        import child_data

        yield SimpleNamespace(checks=child_checks, data=child_data)
    finally:
        sys.path.remove(str(SANDBOX))


def load_source(source: str, where: Path, name: str):
    path = where / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"batched_test_{name}_{abs(hash(str(where)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


INFO = SimpleNamespace(num_classes=3, channels=3, image_size=(8, 8), mean=[0.5] * 3, std=[0.25] * 3, device="cpu")
BATCH = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)


def _norm(x):
    return (x.float() - 127.5) / 64


# train transform -> words the message must hold (what was expected, what came back)
WRONG_TRAIN = {
    "uint8 out": (lambda x: x.flip(3), ["train_batch_transform", "(4, 3, 8, 8)", "float", "torch.uint8", "x.float()"]),
    "batch dim lost": (lambda x: _norm(x)[0], ["train_batch_transform", "Tensor (3, 8, 8)", "same B"]),
    "batch shrunk": (lambda x: _norm(x)[:2], ["train_batch_transform", "Tensor (2, 3, 8, 8)", "same B"]),
    "numpy out": (lambda x: _norm(x).numpy(), ["train_batch_transform", "returned ndarray"]),
    "channels last 3-d": (lambda x: _norm(x).permute(0, 2, 3, 1).reshape(4, 8, 24), ["Tensor (4, 8, 24)"]),
}


@pytest.mark.parametrize("case", list(WRONG_TRAIN))
def test_wrong_batch_transform_output_gets_a_precise_message(harness, case):
    train_tf, words = WRONG_TRAIN[case]
    with pytest.raises(harness.checks.HarnessFailure) as err:
        harness.checks.check_batch_transforms(torch, lambda info: (train_tf, _norm), INFO, BATCH)
    assert err.value.module == "data"
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_train_and_eval_batch_shapes_must_agree(harness):
    def smaller(x):
        return _norm(x)[:, :, :6, :6]

    with pytest.raises(harness.checks.HarnessFailure, match=r"one shape; got \[\(3, 6, 6\), \(3, 8, 8\)\]"):
        harness.checks.check_batch_transforms(torch, lambda info: (_norm, smaller), INFO, BATCH)


def test_build_batch_transforms_must_return_a_pair(harness):
    with pytest.raises(harness.checks.HarnessFailure, match=r"build_batch_transforms\(info\) must return a pair"):
        harness.checks.check_batch_transforms(torch, lambda info: _norm, INFO, BATCH)


def test_a_sound_batch_transform_passes(harness):
    train_tf, eval_tf = harness.checks.check_batch_transforms(torch, lambda info: (_norm, _norm), INFO, BATCH)
    assert torch.equal(eval_tf(BATCH), _norm(BATCH))


@pytest.fixture(scope="module")
def fm(materialize, tmp_path_factory):
    return fashion_bundle(materialize, tmp_path_factory.mktemp("batched") / "data")


BAD_DATA = '''
import torch

def build_batch_transforms(info):
    def train_tf(x):
        return x  # forgot to convert: still uint8
    def eval_tf(x):
        return x.float() / 255
    return train_tf, eval_tf
'''


def test_the_message_reaches_the_iteration_result(fm, tmp_path):
    """Through the real sandboxed child: the iteration fails on data.py with the contract's words."""
    _, bundle = fm
    it = make_iter(tmp_path / "iter_001")
    (it / "data.py").write_text(BAD_DATA)
    result = run_iteration(it, bundle, fast_config())
    assert result.status == "contract_error" and result.error.module == "data", result.error
    assert "train_batch_transform must map a uint8 tensor (B, C, H, W)" in result.error.message
    assert "torch.uint8" in result.error.message and "x.float()" in result.error.message


@pytest.fixture(scope="module")
def colour(materialize):
    """CIFAR-10 images (colour, 32 px), their info as the harness gets it, and a brief for the expert."""
    from automodel.intake import data_info, load_dataset

    ds = load_dataset(materialize("cifar10", "imagefolder", 6))
    split = ds.split(seed=0)
    images = ds.decode(progress=False)
    info = {**data_info(ds, images, split.train), "device": "cpu", "pretrained_available": False}
    brief = Brief(profile=ds.profile(split), info=info, description="", time_per_iter=30.0,
                  hardware=Hardware(cpu_cores=2, device="cpu", memory_gb=24.0))
    ns = SimpleNamespace(**info)
    ns.image_size = tuple(ns.image_size)
    return np.asarray(images.array), ns, brief


def test_batched_and_per_image_paths_give_the_same_eval_tensors_and_predictions(harness, colour, tmp_path):
    """The expert's batched data.py and the reference per-image data.py both only normalise at eval time:
    through the harness's two paths they must hand the model the same tensors, hence the same predictions."""
    images, info, brief = colour
    expert = load_source(write_pipeline(brief).module("data"), tmp_path, "expert_data")
    assert expert.INPUT_SIZE == 32 and hasattr(expert, "build_batch_transforms")
    per_image = load_source(REFERENCE_DATA.read_text(), tmp_path, "reference_data")
    assert not hasattr(per_image, "build_batch_transforms")

    checks, data = harness.checks, harness.data
    sample = list(images[:3])
    uint8 = torch.from_numpy(np.stack(sample)).permute(0, 3, 1, 2)
    batched = data.Transforms(*checks.check_batch_transforms(torch, expert.build_batch_transforms, info, uint8),
                              batched=True)
    single = data.Transforms(*checks.check_image_transforms(torch, per_image.build_transforms, info, sample),
                             batched=False)

    chunk = images[:50]
    a = batched.eval_batch(torch, np, chunk, "cpu")
    b = single.eval_batch(torch, np, chunk, "cpu")
    assert a.shape == b.shape == (50, 3, 32, 32) and a.dtype == b.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert a.std() > 0.5  # real, normalised images, not a constant

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 10))
    pa = data.predict(torch, np, net, images, batched, "cpu", batch_size=64)
    pb = data.predict(torch, np, net, images, single, "cpu", batch_size=64)
    assert pa.shape == (len(images), 10)
    np.testing.assert_allclose(pa, pb, rtol=1e-4, atol=1e-6)
    assert (pa.argmax(1) != pa.argmax(1)[0]).any()  # the predictions depend on the image


def test_training_batches_come_from_the_split_by_index(harness, colour):
    """TrainData's batched loader: every image once per epoch, with its own label, counted for the compute record."""
    images, info, _ = colour
    labels = np.arange(len(images), dtype=np.int64)  # label = position, so each batch says where it came from
    ident = harness.data.Transforms(lambda x: x.float(), lambda x: x.float(), batched=True)
    train = harness.data.TrainData(torch, images, labels, ident, None, info, 0, "cpu")
    loader = train.loader(batch_size=7, shuffle=True, drop_last=False)
    seen = []
    for x, y in loader:
        assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32
        for xi, yi in zip(x, y):
            assert torch.equal(xi, torch.from_numpy(images[int(yi)]).permute(2, 0, 1).float())
        seen += y.tolist()
    assert sorted(seen) == list(range(len(images)))
    assert train.images_served == len(images) and train.batches_served == len(loader) == -(-len(images) // 7)
