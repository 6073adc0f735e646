"""Images of every common format and mode, made at test time from real photos and digits."""

from __future__ import annotations

import importlib
import io
import statistics

import numpy as np
import pytest
from PIL import Image

from automodel.intake import load_dataset
from automodel.intake.decode import working_size
from automodel.intake.images import decode


@pytest.fixture(scope="module")
def photos(materialize):
    """Real RGB photos: CIFAR-10 JPEGs (32x32) and hymenoptera JPEGs (varying size)."""
    cifar = sorted((materialize("cifar10", "imagefolder", 2) / "train").rglob("*.jpg"))
    bees = sorted((materialize("hymenoptera", "flat", 3) / "bees").glob("*.jpg"))
    return [np.asarray(Image.open(p).convert("RGB")) for p in cifar[:12]], [Image.open(p).convert("RGB") for p in bees]


@pytest.fixture(scope="module")
def digits():
    datasets = importlib.import_module("sklearn.datasets")
    return (datasets.load_digits().images * 15).astype(np.uint8)


def _save(img: Image.Image, path, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def make_mixed(root, photos, digits):
    """One folder per class with every format and mode; returns {relpath: what it is}."""
    small, big = photos
    rgb = [Image.fromarray(a) for a in small]
    made = {}
    color = root / "color"
    made["color/a.bmp"] = _save(rgb[0], color / "a.bmp")
    made["color/b.webp"] = _save(rgb[1], color / "b.webp", lossless=True)
    made["color/c.tiff"] = _save(rgb[2], color / "c.tiff")
    made["color/d_palette.png"] = _save(rgb[3].quantize(64), color / "d_palette.png")
    rgba = rgb[4].convert("RGBA")
    alpha = np.full((32, 32), 255, np.uint8)
    alpha[:, :16] = 0  # left half fully transparent: must come out white
    rgba.putalpha(Image.fromarray(alpha))
    made["color/e_rgba.png"] = _save(rgba, color / "e_rgba.png")
    made["color/f.GIF"] = _save(rgb[5].convert("P"), color / "f.GIF")
    made["color/g.JPG"] = _save(rgb[6], color / "g.JPG", quality=95)
    made["color/h.jpeg"] = _save(big[0].resize((90, 60)), color / "h.jpeg", quality=95)
    made["color/i_cmyk.jpg"] = _save(rgb[7].convert("CMYK"), color / "i_cmyk.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise
    made["color/j_rotated.jpg"] = _save(big[1].resize((60, 40)), color / "j_rotated.jpg", exif=exif, quality=95)
    gray = root / "gray"
    made["gray/k_16bit.png"] = _save(Image.fromarray(digits[0].astype(np.uint16) * 257), gray / "k_16bit.png")
    la = Image.merge(
        "LA", [Image.fromarray(digits[1]), Image.fromarray(np.where(digits[1] > 0, 255, 0).astype(np.uint8))]
    )
    made["gray/l_la.png"] = _save(la, gray / "l_la.png")
    made["gray/m_gray.jpg"] = _save(Image.fromarray(digits[2]), gray / "m_gray.jpg", quality=95)
    made["gray/n_1bit.png"] = _save(Image.fromarray(digits[3]).convert("1"), gray / "n_1bit.png")
    made["gray/o_gray.tif"] = _save(Image.fromarray(digits[4]), gray / "o_gray.tif")
    made["gray/p_gray.webp"] = _save(Image.fromarray(digits[5]).convert("RGB"), gray / "p_gray.webp", lossless=True)
    # Files that are not images are ignored silently; broken images are skipped with a reason.
    (color / "notes.txt").write_text("collected in 2024")
    (color / ".DS_Store").write_bytes(b"\0\0\0\1Bud1\0")
    (gray / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    buf = io.BytesIO()
    rgb[8].resize((64, 64)).save(buf, "JPEG", quality=95)
    (color / "q_truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (gray / "r_fake.png").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\n")
    return {rel: p for rel, p in made.items()}


def test_every_format_and_mode_is_read(tmp_path, photos, digits):
    made = make_mixed(tmp_path / "mixed", photos, digits)
    ds = load_dataset(tmp_path / "mixed", progress=False)
    assert {it.relpath for it in ds.items} == set(made)
    assert [s["path"] for s in ds.skipped] == ["color/q_truncated.jpg", "gray/r_fake.png"]
    assert "truncated" in ds.skipped[0]["reason"]
    assert "not an image" in ds.skipped[1]["reason"]
    prof = ds.profile()
    assert {"P", "RGBA", "CMYK", "I;16", "LA", "1", "L", "RGB"} <= set(prof["modes"])
    assert {"BMP", "WEBP", "TIFF", "GIF", "JPEG", "PNG"} <= set(prof["formats"])

    images = ds.decode(progress=False)
    sizes = [(m.width, m.height) for m in ds.image_meta]
    side = min(128, max(32, round(statistics.median(min(s) for s in sizes))))
    assert images.image_size == (side, side) and images.channels == 3  # mixed colour and gray
    assert images.array.shape == (len(made), side, side, 3) and images.array.dtype == np.uint8


def test_pixel_semantics_of_conversions(tmp_path, photos, digits):
    made = make_mixed(tmp_path / "mixed", photos, digits)
    small, big = photos

    rgba = decode(str(made["color/e_rgba.png"]), None, 3)
    assert (rgba[:, :16] == 255).all(), "transparent pixels are composited on white"
    np.testing.assert_array_equal(rgba[:, 16:], small[4][:, 16:])

    sixteen = decode(str(made["gray/k_16bit.png"]), None, 1)
    np.testing.assert_array_equal(sixteen[:, :, 0], digits[0])  # 16-bit scaled back to 8-bit exactly

    palette = decode(str(made["color/d_palette.png"]), None, 3)
    assert palette.shape == (32, 32, 3)
    assert np.abs(palette.astype(int) - small[3]).mean() < 12

    la = decode(str(made["gray/l_la.png"]), None, 1)
    np.testing.assert_array_equal(la[:, :, 0], np.where(digits[1] > 0, digits[1], 255))

    bits = decode(str(made["gray/n_1bit.png"]), None, 1)
    assert set(np.unique(bits)) <= {0, 255}

    cmyk = decode(str(made["color/i_cmyk.jpg"]), None, 3)
    assert np.abs(cmyk.astype(int) - small[7]).mean() < 12

    # EXIF orientation 6: the 60x40 stored image is shown (and decoded) as 40 wide, 60 high.
    rotated = decode(str(made["color/j_rotated.jpg"]), None, 3)
    assert rotated.shape == (60, 40, 3)
    stored = np.asarray(big[1].resize((60, 40)))
    assert np.abs(rotated.astype(int) - np.rot90(stored, k=-1)).mean() < 12

    gif = decode(str(made["color/f.GIF"]), (16, 16), 3)
    assert gif.shape == (16, 16, 3)
    gray_of_color = decode(str(made["color/a.bmp"]), None, 1)
    np.testing.assert_array_equal(gray_of_color[:, :, 0], np.asarray(Image.fromarray(small[0]).convert("L")))


def test_gray_only_dataset_decodes_to_one_channel(tmp_path, digits):
    root = tmp_path / "gray"
    for i in range(6):
        cls = root / ("even" if i % 2 == 0 else "odd")
        _save(Image.fromarray(digits[i].astype(np.uint16) * 257), cls / f"{i}_16.png")
        _save(Image.fromarray(digits[10 + i]), cls / f"{i}_l.png")
        _save(Image.fromarray(digits[20 + i]).convert("1"), cls / f"{i}_1.png")
    ds = load_dataset(root, progress=False)
    images = ds.decode(progress=False)
    assert images.channels == 1 and images.image_size == (8, 8)
    assert images.array.shape == (18, 8, 8, 1)
    k = next(k for k, it in enumerate(ds.items) if it.relpath == "even/0_16.png")
    np.testing.assert_array_equal(images.array[k, :, :, 0], digits[0])


def test_working_size_rules():
    assert working_size([(28, 28)] * 3, None) == (28, 28)  # one small size: kept
    assert working_size([(48, 32)] * 2, None) == (32, 48)  # kept as (H, W)
    assert working_size([(100, 100)] * 2, None) == (100, 100)  # one size above 64: median short side
    assert working_size([(500, 375), (300, 200), (2592, 1984)], None) == (128, 128)  # clamped to 128
    assert working_size([(20, 30), (28, 28)], None) == (32, 32)  # clamped to 32
    assert working_size([(20, 30), (28, 28)], 48) == (48, 48)
    assert working_size([(20, 30)], (40, 24)) == (40, 24)
