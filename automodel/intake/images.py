"""Reading one image file: what it is (probe) and its pixels at a working size (decode).

Everything here runs in worker processes too, so it imports only Pillow and
numpy and works on plain paths and tuples (cheap to pickle).
"""

from __future__ import annotations

import hashlib
from io import BytesIO

import numpy as np
from PIL import Image, ImageOps

# Lower-case suffixes we try to read; any other file is ignored silently.
IMAGE_EXTENSIONS = frozenset({
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif", ".webp",
    ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm",
})
# Modes that carry no colour; a dataset made only of these is decoded with 1 channel.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ORIENTATION_TAG = 0x0112
_WHITE = 255


def is_image_name(name: str) -> bool:
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS and not name.startswith(".")


def probe(path: str) -> tuple:
    """Return (width, height, mode, format, content_digest, error) for one file.

    width/height are after EXIF orientation. The whole file is decoded (JPEGs at
    reduced scale, which still reads every byte) so truncated or corrupt files are
    found here, once, instead of in the middle of a later decode. `error` is None
    for a readable image, else a short reason and the other fields may be empty.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as err:
        return (0, 0, "", "", "", f"cannot read the file ({err.strerror or err})")
    digest = hashlib.blake2b(data, digest_size=12).hexdigest()
    if not data:
        return (0, 0, "", "", digest, "empty file (0 bytes)")
    try:
        with Image.open(BytesIO(data)) as img:
            fmt, mode = img.format or "", img.mode
            width, height = img.size
            if _orientation(img) in (5, 6, 7, 8):  # rotated by 90 degrees
                width, height = height, width
            if fmt == "JPEG":
                img.draft(img.mode, (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
            img.load()
    except Image.DecompressionBombError as err:
        return (0, 0, "", "", digest, f"image too large to decode safely ({err})")
    except Exception as err:  # noqa: BLE001 - any decoder failure means "unreadable"
        return (0, 0, "", "", digest, _reason(err))
    return (int(width), int(height), mode, fmt, digest, None)


def _reason(err: Exception) -> str:
    text = str(err).strip() or type(err).__name__
    if "cannot identify image file" in text:
        return "not an image Pillow can read (unknown or corrupt format)"
    if "truncated" in text:
        return "truncated or corrupt image data (the file ends early)"
    return f"corrupt or unsupported image ({type(err).__name__}: {text[:160]})"


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_ORIENTATION_TAG, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make the image unreadable
        return 1


def decode(path: str, size: tuple[int, int] | None, channels: int) -> np.ndarray:
    """Pixels of one image as uint8 (H, W, channels).

    size=(H, W) resizes so the image covers H x W (keeping its aspect ratio) and
    crops the centre; None keeps the image's own size. GIF/TIFF give their first
    frame, transparency is composited on white, palettes become RGB, 16-bit and
    float images are scaled to 8 bit and the EXIF orientation is applied.
    """
    with Image.open(path) as img:
        if size is not None and img.format == "JPEG":
            # Let libjpeg decode at 1/2..1/8 scale when the photo is much larger than
            # needed: several times faster and still at least the requested size.
            side = max(size)
            img.draft("L" if channels == 1 else "RGB", (side, side))
        img.load()
        img = _apply_orientation(img)
        img = to_8bit(img)
    if channels == 1 and img.mode != "L":
        img = img.convert("L")
    elif channels == 3 and img.mode != "RGB":
        img = img.convert("RGB")
    if size is not None and (img.size[1], img.size[0]) != tuple(size):
        img = cover_and_crop(img, size)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _apply_orientation(img: Image.Image) -> Image.Image:
    if _orientation(img) in (1, 0):
        return img
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - keep the pixels as stored rather than fail
        return img


def to_8bit(img: Image.Image) -> Image.Image:
    """Return an 'L' or 'RGB' image with alpha composited on white."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in ("LA", "La"):
        arr = np.asarray(img.convert("LA"), dtype=np.float32)
        return Image.fromarray(_over_white(arr[..., :1], arr[..., 1:2])[..., 0], "L")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "RGBa"):
        arr = np.asarray(img.convert("RGBA"), dtype=np.float32)
        return Image.fromarray(_over_white(arr[..., :3], arr[..., 3:4]), "RGB")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_scale_to_uint8(np.asarray(img), mode), "L")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...


def _over_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha / 255.0
    return np.clip(color * a + _WHITE * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)


def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    arr = arr.astype(np.float64)
    if mode.startswith("I;16"):
        return np.clip(arr / 257.0 + 0.5, 0, 255).astype(np.uint8)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if mode == "F" and lo >= 0.0 and hi <= 1.0:
        arr = arr * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        pass
    elif lo >= 0.0 and hi <= 65535.0:
        arr = arr / 257.0  # a 16-bit image stored in a 32-bit mode
    elif hi > lo:
        arr = (arr - lo) * (255.0 / (hi - lo))
    return np.clip(arr + 0.5, 0, 255).astype(np.uint8)


def cover_and_crop(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to cover (H, W) = size with the aspect ratio kept, then crop the centre."""
    out_h, out_w = size
    w, h = img.size
    scale = max(out_w / w, out_h / h)
    new_w, new_h = max(out_w, round(w * scale)), max(out_h, round(h * scale))
    if (new_w, new_h) != (w, h):
        # reducing_gap: box-reduce first on big downscales (fast), then an
        # antialiased bilinear filter for the last step (good enough quality).
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0)
    left, top = (new_w - out_w) // 2, (new_h - out_h) // 2
    if (left, top, new_w, new_h) != (0, 0, out_w, out_h):
        img = img.crop((left, top, left + out_w, top + out_h))
    return img
