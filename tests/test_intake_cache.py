"""Decode once: the metadata index and the decoded array are served from the cache on the second load."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from automodel.intake import data_info, load_dataset


@pytest.fixture
def cifar(tmp_path, materialize):
    root = tmp_path / "cifar"
    shutil.copytree(materialize("cifar10", "imagefolder", 25), root)
    return root


def test_second_load_and_decode_come_from_the_cache(cifar, tmp_path):
    cache = tmp_path / "cache"
    ds = load_dataset(cifar, cache_dir=cache, progress=False)
    assert not ds.index_from_cache
    first = ds.decode(cache_dir=cache, progress=False)
    assert not first.from_cache and first.cache_path.parent.parent == cache / "intake"
    assert first.array.shape == (500, 32, 32, 3)

    again = load_dataset(cifar, cache_dir=cache, progress=False)
    assert again.index_from_cache and again.fingerprint == ds.fingerprint
    assert again.profile() == ds.profile()
    second = again.decode(cache_dir=cache, progress=False)
    assert second.from_cache and second.cache_path == first.cache_path
    assert isinstance(second.array, np.memmap)  # loaded with np.load(mmap_mode="r")
    np.testing.assert_array_equal(np.asarray(second.array), np.asarray(first.array))
    # The cache holds finished files only (written to a temporary name, then renamed).
    assert not [p for p in cache.rglob("*") if p.name.endswith(".tmp")]

    # Another working resolution is another entry; the first stays valid.
    small = again.decode(resolution=16, cache_dir=cache, progress=False)
    assert not small.from_cache and small.array.shape == (500, 16, 16, 3)
    assert again.decode(cache_dir=cache, progress=False).from_cache


def test_worker_pool_gives_the_same_result_as_one_process(cifar, tmp_path, monkeypatch):
    from automodel.intake import parallel

    monkeypatch.setenv("AUTOMODEL_WORKERS", "1")
    serial_ds = load_dataset(cifar, cache_dir=tmp_path / "one", progress=False)
    serial = serial_ds.decode(resolution=24, cache_dir=tmp_path / "one", progress=False)
    # Force the pool even for this small set (normally it starts at 1000 files or 8 MB).
    monkeypatch.setenv("AUTOMODEL_WORKERS", "2")
    monkeypatch.setattr(parallel, "PARALLEL_MIN_ITEMS", 1)
    pooled_ds = load_dataset(cifar, cache_dir=tmp_path / "two", progress=False)
    pooled = pooled_ds.decode(resolution=24, cache_dir=tmp_path / "two", progress=False)
    assert pooled_ds.image_meta == serial_ds.image_meta
    np.testing.assert_array_equal(np.asarray(pooled.array), np.asarray(serial.array))


def test_changed_file_invalidates_the_cache(cifar, tmp_path):
    cache = tmp_path / "cache"
    ds = load_dataset(cifar, cache_dir=cache, progress=False)
    ds.decode(cache_dir=cache, progress=False)
    target = ds.items[3].path
    Image.new("RGB", (32, 32), (255, 0, 0)).save(target, "JPEG")
    os.utime(target, ns=(1, 1))  # a different size and mtime: another fingerprint
    changed = load_dataset(cifar, cache_dir=cache, progress=False)
    assert changed.fingerprint != ds.fingerprint and not changed.index_from_cache
    images = changed.decode(cache_dir=cache, progress=False)
    assert not images.from_cache
    assert images.array[3, :, :, 0].mean() > 200 and images.array[3, :, :, 1].mean() < 40


def test_default_cache_dir_is_automodel_cache_env(cifar, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOMODEL_CACHE", str(tmp_path / "envcache"))
    ds = load_dataset(cifar, progress=False)
    images = ds.decode(progress=False)
    assert images.cache_path.is_relative_to(tmp_path / "envcache")
    assert (tmp_path / "envcache" / "intake" / "index" / f"{ds.fingerprint}.json").is_file()


def test_inspect_twice_reads_the_index_from_the_cache(cifar, tmp_path, cli):
    env = {"AUTOMODEL_CACHE": str(tmp_path / "clicache")}
    first = json.loads(cli("inspect", cifar, "--json", env=env).stdout)
    index = tmp_path / "clicache" / "intake" / "index" / f"{first['fingerprint']}.json"
    assert index.is_file()
    stamp = index.stat().st_mtime_ns
    second = json.loads(cli("inspect", cifar, "--json", env=env).stdout)
    assert second == first and index.stat().st_mtime_ns == stamp  # read, not rewritten


def test_data_info_measures_the_train_split(cifar, tmp_path):
    ds = load_dataset(cifar, cache_dir=tmp_path, progress=False)
    split = ds.split()
    images = ds.decode(cache_dir=tmp_path, progress=False)
    info = data_info(ds, images, split.train)
    train = np.asarray(images.array[split.train], dtype=np.float64) / 255.0
    assert info["num_classes"] == 10 and info["class_names"] == ds.classes
    assert info["channels"] == 3 and info["image_size"] == [32, 32] and info["num_train"] == len(split.train)
    np.testing.assert_allclose(info["mean"], train.mean(axis=(0, 1, 2)), atol=1e-5)
    np.testing.assert_allclose(info["std"], train.std(axis=(0, 1, 2)), atol=1e-5)
    json.dumps(info)  # goes into info.json as is
