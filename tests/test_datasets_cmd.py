"""`automodel datasets list|show|fetch` and the registry behind them (automodel/datasets.yaml).

The local sets are written for real (scikit-learn digits, the shared sets via
materialize.py) and read back with automodel.intake. The network sets cannot
be downloaded here: their error path is checked through the real CLI, and each
reader is checked on a small file written at test time in the format the
downloaded files have (pickle batches, .mat, .npy, .npz, zip, CSV).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from automodel.datasets.fetch import fetch
from automodel.datasets.registry import load_registry
from automodel.datasets.registry import shared_dir as find_shared
from automodel.datasets.writers import CIFAR10C_CORRUPTIONS, stratified_split
from automodel.errors import DatasetError, UsageError

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = {"cifar10", "cifar10-c-s1", "cifar10-c-s5", "tinyimagenet", "svhn", "dsprites-orientation",
             "cassava", "kitchenware", "arabic-letters", "4-animals"}
LOCAL = {"digits", "fashion-mnist", "mnist", "cifar10-subset", "hymenoptera"}


def _files(root: Path) -> dict[str, dict[str, int]]:
    """split -> class -> number of files in an imagefolder."""
    return {s.name: {c.name: sum(1 for _ in c.iterdir()) for c in s.iterdir()} for s in root.iterdir() if s.is_dir()}


def _intake_counts(root: Path) -> dict[tuple[str, str], int]:
    intake = importlib.import_module("automodel.intake")
    ds = intake.load_dataset(root, progress=False)
    counts: dict[tuple[str, str], int] = {}
    for item in ds.items:
        key = (item.split, ds.classes[item.label])
        counts[key] = counts.get(key, 0) + 1
    return counts


# ------------------------------------------------------------------ registry


def test_registry_holds_every_published_and_local_set_with_sources_and_splits():
    reg = load_registry()
    assert set(reg.names()) == PUBLISHED | LOCAL
    assert reg.get("dsprites-orientation").classes == 40
    assert reg.get("tinyimagenet").classes == 200
    assert reg.get("cifar10-c-s1").extra["severity"] == 1 and reg.get("cifar10-c-s5").extra["severity"] == 5
    for name in PUBLISHED:
        entry = reg.get(name)
        assert entry.kind == "network"
        src = entry.source
        # Every network set says where to get it: a URL or a Kaggle slug.
        assert src.files or src.kaggle_slug, name
        for f in src.files:
            assert f.url.startswith(("http://", "https://")), name
            # A checksum is either absent or a real md5 with its provenance named.
            assert f.md5 is None or (re.fullmatch(r"[0-9a-f]{32}", f.md5) and f.checksum_source), name
        if src.type == "kaggle":
            assert src.kaggle_command().startswith(("kaggle competitions download -c ", "kaggle datasets download -d "))
    for name in LOCAL:
        assert reg.get(name).offline
    # Where the paper's numbers could not be read they are null and say so, never guessed.
    for entry in reg.entries.values():
        pub = entry.published
        for value in (pub.zero_shot, pub.first_iteration, pub.final, pub.kaggle_top_accuracy):
            assert value is None or 0.0 <= value <= 1.0
        if entry.name in PUBLISHED and pub.final is None:
            assert "not found offline" in pub.note


def test_top_level_datasets_yaml_points_at_the_packaged_registry():
    root = load_registry(REPO / "datasets.yaml")
    packaged = load_registry()
    assert root.path == packaged.path and root.names() == packaged.names()


def test_unknown_name_is_a_usage_error_with_suggestions():
    with pytest.raises(UsageError, match="Did you mean cifar10"):
        load_registry().get("cifar1O")


def test_broken_registry_entry_names_the_file_and_the_entry(tmp_path):
    bad = tmp_path / "datasets.yaml"
    bad.write_text("datasets:\n  x:\n    title: X\n    kind: local\n    classes: 3\n    writer: digits\n"
                   "    source: {type: sklearn}\n    split: {rule: random}\n    published: {}\n")
    with pytest.raises(DatasetError, match=r"entry 'x' needs split.rule") as err:
        load_registry(bad)
    assert str(bad) in str(err.value)


# ---------------------------------------------------------------------- list


def test_datasets_list_shows_every_entry_with_classes_source_and_where(cli):
    proc = cli("datasets", "list")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    for name in PUBLISHED | LOCAL:
        assert name in lines, name
    assert re.search(r"\b40\b", lines["dsprites-orientation"]) and "network" in lines["dsprites-orientation"]
    assert "kaggle competition: cassava-leaf-disease-classification" in lines["cassava"]
    assert "local" in lines["digits"] and "sklearn" in lines["digits"]
    assert "not found offline" in proc.stdout

    as_json = json.loads(cli("datasets", "list", "--json").stdout)
    assert set(as_json) == PUBLISHED | LOCAL
    assert as_json["svhn"]["split"]["rule"] == "provided-test"


def test_datasets_show_tells_how_to_obtain_a_network_set(cli):
    proc = cli("datasets", "show", "tinyimagenet")
    assert proc.returncode == 0, proc.stderr
    assert "val-as-test" in proc.stdout
    assert "http://cs231n.stanford.edu/tiny-imagenet-200.zip" in proc.stdout
    assert "automodel datasets fetch tinyimagenet DIR --source ROOT" in proc.stdout


# ------------------------------------------------------------- fetch: local


def test_fetch_digits_writes_a_seeded_80_20_image_folder_that_intake_loads(cli, tmp_path):
    dest = tmp_path / "digits"
    proc = cli("datasets", "fetch", "digits", dest, "--per-class", "6")
    assert proc.returncode == 0, proc.stderr
    assert _files(dest) == {split: {str(d): 6 for d in range(10)} for split in ("train", "test")}
    png = next((dest / "train" / "3").iterdir())
    with Image.open(png) as im:
        assert im.size == (8, 8) and im.mode == "L"
    counts = _intake_counts(dest)
    assert sum(n for (s, _), n in counts.items() if s == "test") == 60
    assert all(n == 6 for n in counts.values()) and len(counts) == 20


def test_fetch_digits_in_full_is_stratified_and_reproducible(tmp_path):
    entry = load_registry().get("digits")
    a = fetch(entry, tmp_path / "a")
    assert a.total == 1797
    for label, n_test in a.counts["test"].items():
        n_all = n_test + a.counts["train"][label]
        assert abs(n_test - 0.2 * n_all) <= 1, label

    def digest(root: Path) -> str:
        h = hashlib.sha256()
        for p in sorted((root / "test").rglob("*.png")):
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
        return h.hexdigest()

    b = fetch(entry, tmp_path / "b")
    c = fetch(entry, tmp_path / "c", seed=1)
    assert digest(a.dest) == digest(b.dest)
    assert digest(a.dest) != digest(c.dest)


def test_fetch_digits_flat_and_csv_layouts(tmp_path):
    entry = load_registry().get("digits")
    flat = fetch(entry, tmp_path / "flat", per_class=3, layout="flat")
    assert sorted(p.name for p in flat.dest.iterdir()) == [str(d) for d in range(10)]
    assert all(len(list(p.iterdir())) == 6 for p in flat.dest.iterdir())
    table = fetch(entry, tmp_path / "csv", per_class=2, layout="csv")
    rows = (table.dest / "labels.csv").read_text().splitlines()
    assert rows[0] == "filename,label" and len(rows) == 1 + 40
    assert all((table.dest / "images" / r.split(",")[0]).is_file() for r in rows[1:])


def test_fetch_refuses_a_non_empty_folder_unless_forced(cli, tmp_path):
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    proc = cli("datasets", "fetch", "digits", dest, "--per-class", "1")
    assert proc.returncode == 2 and "--force" in proc.stderr and (dest / "keep.txt").exists()
    proc = cli("datasets", "fetch", "digits", dest, "--per-class", "1", "--force")
    assert proc.returncode == 0 and not (dest / "keep.txt").exists()


def test_fetch_shared_set_through_materialize(cli, tmp_path, shared_dir):
    dest = tmp_path / "mnist"
    proc = cli("datasets", "fetch", "mnist", dest, "--per-class", "4", env={"AUTOMODEL_SHARED": str(shared_dir)})
    assert proc.returncode == 0, proc.stderr
    assert _files(dest) == {split: {str(d): 4 for d in range(10)} for split in ("train", "test")}
    counts = _intake_counts(dest)
    assert len(counts) == 20 and set(counts.values()) == {4}


def test_shared_folder_not_found_is_a_clear_error(cli, tmp_path):
    proc = cli("datasets", "fetch", "hymenoptera", tmp_path / "h", env={"AUTOMODEL_SHARED": str(tmp_path / "nowhere")})
    assert proc.returncode == 3
    assert "AUTOMODEL_SHARED" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "h").exists()


def test_shared_dir_is_found_next_to_the_repository(shared_dir, monkeypatch):
    monkeypatch.delenv("AUTOMODEL_SHARED", raising=False)
    assert find_shared().resolve() == shared_dir.resolve()


# ----------------------------------------------------------- fetch: network


def test_fetch_of_a_network_set_without_network_names_the_download_and_exits_non_zero(cli, tmp_path):
    dest = tmp_path / "c10"
    proc = cli("datasets", "fetch", "cifar10", dest, env={"AUTOMODEL_OFFLINE": "1"})
    assert proc.returncode == 3
    err = proc.stderr
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in err
    assert "c58f30108f718f92721af3b95e74349a" in err
    assert "torchvision.datasets.CIFAR10(root=ROOT" in err and "--source ROOT" in err
    assert "Traceback" not in err and not dest.exists()


def test_fetch_of_a_kaggle_set_names_the_kaggle_command(cli, tmp_path):
    proc = cli("datasets", "fetch", "kitchenware", tmp_path / "k")
    assert proc.returncode == 3
    assert "kaggle competitions download -c kitchenware-classification" in proc.stderr
    assert "--source kitchenware-classification.zip" in proc.stderr


# The readers, on files written here in the format of the real downloads.


def test_cifar10_reader_keeps_channels_and_the_official_split(tmp_path):
    root = tmp_path / "root" / "cifar-10-batches-py"
    root.mkdir(parents=True)
    red = np.zeros((1, 3, 32, 32), np.uint8)
    red[:, 0] = 255  # the batches store the red plane first
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = np.concatenate([red, np.zeros((1, 3, 32, 32), np.uint8)]).reshape(2, -1)
        (root / name).write_bytes(pickle.dumps({"data": data, "labels": [3, 8]}, protocol=2))
    out = fetch(load_registry().get("cifar10"), tmp_path / "out", source=tmp_path / "root")
    assert out.counts == {"train": {"cat": 5, "ship": 5}, "test": {"cat": 1, "ship": 1}}
    with Image.open(next((out.dest / "train" / "cat").iterdir())) as im:
        assert im.getpixel((5, 7)) == (255, 0, 0)


def test_svhn_reader_maps_label_10_to_digit_0(tmp_path):
    scipy_io = importlib.import_module("scipy.io")
    for split, n in (("train", 4), ("test", 2)):
        x = np.random.default_rng(0).integers(0, 255, (32, 32, 3, n), dtype=np.uint8)
        scipy_io.savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": np.array([[10], [1]] * (n // 2))})
    out = fetch(load_registry().get("svhn"), tmp_path / "out", source=tmp_path)
    assert out.counts == {"train": {"0": 2, "1": 2}, "test": {"0": 1, "1": 1}}


def test_cifar10c_reader_draws_one_corruption_per_image_at_the_severity(tmp_path):
    per = 20  # rows per severity (10,000 in the real archive)
    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    labels = np.tile(np.repeat(np.arange(2), per // 2), 5)
    np.save(folder / "labels.npy", labels)
    for k, corruption in enumerate(CIFAR10C_CORRUPTIONS):
        arr = np.zeros((5 * per, 32, 32, 3), np.uint8)
        for sev in range(5):
            arr[sev * per:(sev + 1) * per, 0, 0, 0] = k  # which corruption
            arr[sev * per:(sev + 1) * per, 0, 0, 1] = sev + 1  # which severity
        np.save(folder / f"{corruption}.npy", arr)
    out = fetch(load_registry().get("cifar10-c-s5"), tmp_path / "out", source=tmp_path)
    assert out.counts == {"train": {"airplane": 8, "automobile": 8}, "test": {"airplane": 2, "automobile": 2}}
    seen = set()
    for png in out.dest.rglob("*.png"):
        with Image.open(png) as im:
            corruption, severity, _ = im.getpixel((0, 0))
        assert severity == 5
        seen.add(corruption)
    assert len(seen) > 5  # drawn across corruptions, not one for all


def test_tinyimagenet_reader_uses_val_as_test(tmp_path):
    archive = tmp_path / "tiny-imagenet-200.zip"
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(jpeg, "JPEG")
    with zipfile.ZipFile(archive, "w") as z:
        for wnid in ("n01443537", "n01629819"):
            for i in range(3):
                z.writestr(f"tiny-imagenet-200/train/{wnid}/images/{wnid}_{i}.JPEG", jpeg.getvalue())
            z.writestr(f"tiny-imagenet-200/train/{wnid}/{wnid}_boxes.txt", "")
        z.writestr("tiny-imagenet-200/val/images/val_0.JPEG", jpeg.getvalue())
        z.writestr("tiny-imagenet-200/val/images/val_1.JPEG", jpeg.getvalue())
        z.writestr("tiny-imagenet-200/val/val_annotations.txt",
                   "val_0.JPEG\tn01443537\t0\t0\t63\t63\nval_1.JPEG\tn01629819\t1\t1\t60\t60\n")
    out = fetch(load_registry().get("tinyimagenet"), tmp_path / "out", source=archive, per_class=2)
    assert out.counts == {"train": {"n01443537": 2, "n01629819": 2}, "test": {"n01443537": 1, "n01629819": 1}}
    assert (out.dest / "test" / "n01443537" / "test_000000.jpeg").read_bytes() == jpeg.getvalue()


def test_dsprites_reader_labels_orientation(tmp_path):
    n = 40 * 5
    classes = np.zeros((n, 6), np.int64)
    classes[:, 3] = np.arange(n) % 40
    imgs = np.zeros((n, 64, 64), np.uint8)
    imgs[:, 0, 0] = 1
    np.savez_compressed(tmp_path / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz", imgs=imgs, latents_classes=classes)
    out = fetch(load_registry().get("dsprites-orientation"), tmp_path / "out", source=tmp_path, per_class=3)
    assert len(out.counts["train"]) == 40 and set(out.counts["train"].values()) == {3}
    assert set(out.counts["test"].values()) == {1}  # 1 of 5 per class is test
    with Image.open(next((out.dest / "train" / "07").iterdir())) as im:
        assert im.size == (64, 64) and im.getpixel((0, 0)) == 255


def test_kaggle_csv_reader_for_kitchenware_zip(tmp_path):
    archive = tmp_path / "kitchenware-classification.zip"
    labels = ["cup", "fork", "glass", "knife", "plate", "spoon"] * 5
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("train.csv", "Id,label\n" + "".join(f"{i},{lab}\n" for i, lab in enumerate(labels)))
        z.writestr("test.csv", "Id\n9999\n")
        for i in range(len(labels)):
            z.writestr(f"images/{i:04d}.jpg", f"jpeg {i}".encode())
    out = fetch(load_registry().get("kitchenware"), tmp_path / "out", source=archive)
    assert out.counts["train"] == {k: 4 for k in set(labels)} and out.counts["test"] == {k: 1 for k in set(labels)}


def test_ahcd_reader_uses_the_provided_train_and_test_files(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("Train", 6), ("Test", 3)):
        np.savetxt(
            tmp_path / f"csv{split}Images {n}x1024.csv", rng.integers(0, 256, (n, 1024)), delimiter=",", fmt="%d"
        )
        np.savetxt(tmp_path / f"csv{split}Label {n}x1.csv", np.arange(n) % 3 + 1, fmt="%d")
    out = fetch(load_registry().get("arabic-letters"), tmp_path / "out", source=tmp_path)
    assert out.counts == {"train": {"01": 2, "02": 2, "03": 2}, "test": {"01": 1, "02": 1, "03": 1}}


def test_class_folder_reader_splits_4_animals(tmp_path):
    for label in ("cat", "deer", "dog", "horse"):
        (tmp_path / "src" / "train" / label).mkdir(parents=True)
        for i in range(10):
            (tmp_path / "src" / "train" / label / f"{i}.jpg").write_bytes(b"x")
    (tmp_path / "src" / "test").mkdir()
    (tmp_path / "src" / "test" / "1.jpg").write_bytes(b"x")
    out = fetch(load_registry().get("4-animals"), tmp_path / "out", source=tmp_path / "src")
    assert out.counts == {
        "train": {k: 8 for k in ("cat", "deer", "dog", "horse")},
        "test": {k: 2 for k in ("cat", "deer", "dog", "horse")},
    }


def test_stratified_split_keeps_every_class_in_both_splits():
    labels = np.array([0] * 2 + [1] * 50)
    split = stratified_split(labels, seed=0)
    assert sorted(set(labels[split["test"]])) == [0, 1] and sorted(set(labels[split["train"]])) == [0, 1]
    assert len(split["test"]) == 1 + 10
    assert sorted(np.concatenate([split["train"], split["test"]])) == list(range(52))


def test_fetch_train_per_class_caps_only_the_training_split(cli, tmp_path, shared_dir):
    out = tmp_path / "fm"
    proc = cli("datasets", "fetch", "fashion-mnist", out, "--train-per-class", "3", "--per-class", "5")
    assert proc.returncode == 0, proc.stderr
    assert all(len(list(d.iterdir())) == 3 for d in (out / "train").iterdir())
    assert all(len(list(d.iterdir())) == 5 for d in (out / "test").iterdir())
    assert not list(tmp_path.glob("*-test")), "the temporary test folder is cleaned up"
    bad = cli("datasets", "fetch", "digits", tmp_path / "d", "--train-per-class", "3", "--layout", "flat")
    assert bad.returncode == 2 and "imagefolder" in bad.stderr
