"""What the expert reads off a Brief before it chooses a recipe.

`read_task(brief)` returns `TaskFacts`: sizes, channels, the compute
available, whether flips are safe (from the description and the class names)
and which cached pretrained backbone to fine-tune, each flag with the reason
it was set (the Architect writes them into its summary).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from automodel.core import Brief


@dataclass(frozen=True)
class TaskFacts:
    side: int                        # decoded (working) side in px, max of H and W
    original_side: int               # median shorter side of the source files in px
    channels: int                    # 1 or 3
    num_classes: int
    num_train: int
    class_names: tuple[str, ...]
    device: str                      # "cpu" | "cuda"
    cpu_cores: int
    gpu_memory_gb: float | None
    time_per_iter: float             # training seconds per iteration
    orientation_sensitive: bool      # flips/rotations would change the label
    top_down: bool                   # no canonical "up": vertical flips are safe
    symbols: bool                    # digits, letters or text: small rotations keep labels that flips change
    pretrained: str | None           # cached timm weights to use, if any
    reasons: tuple[str, ...] = field(default_factory=tuple)  # how the flags above were decided
    throughput: dict[str, Any] | None = None  # measured training images/s of the reference CNN (Brief.throughput)
    background: tuple[int, ...] | None = None  # pixel value of a plain background per channel (DataInfo)

    @property
    def is_photo(self) -> bool:
        return _photo_sized(self.side, self.original_side)

    @property
    def flips_allowed(self) -> bool:
        return not self.orientation_sensitive


def _photo_sized(side: int, original_side: int) -> bool:
    """Images bigger than the small-image benchmarks (28-64 px), decoded or at the source."""
    return side > 64 or original_side > 96


# Words that name symbols (digits, letters, text): flips change their labels, a slanted hand or a tilted scan
# does not.
_SYMBOLS = (r"digits?|numerals?|characters?|letters?|alphabets?|handwrit\w*|hand-writ\w*|glyphs?|fonts?|texts?|ocr|"
            r"kanji|hanzi|captchas?|mnist|emnist|kmnist|svhn|license plates?|number plates?")
_SYMBOL_WORDS = re.compile(rf"\b({_SYMBOLS})\b", re.IGNORECASE)
# Words in a description that mean a flip or rotation could change the label.
_ORIENTATION_WORDS = re.compile(rf"\b({_SYMBOLS}|orientations?|rotated|rotations?|arrows?|signs?|signage)\b",
                                re.IGNORECASE)
# Words meaning the label is an angle or a direction: any rotation could change it.
_TURN_WORDS = re.compile(r"\b(orientations?|rotat\w*|angles?|arrows?|directions?|upright|upside|tilt\w*|pointing|"
                         r"signs?|signage)\b", re.IGNORECASE)
_NOT_DIGITS = re.compile(r"fashion[-_ ]?mnist", re.IGNORECASE)
# Words meaning the images are seen from above or have no canonical orientation.
_TOP_DOWN_WORDS = re.compile(
    r"\b(satellite|aerial|overhead|top[- ]down|drone|remote sensing|microscop\w*|histolog\w*|histopatholog\w*|"
    r"cells?|patholog\w*|textures?|fabric|galax\w*|astronom\w*|plankton|petri)\b", re.IGNORECASE)
_DIRECTION_CLASSES = {"left", "right", "up", "down", "upright", "rotated", "upside_down", "upsidedown", "north",
                      "south", "east", "west", "clockwise", "counterclockwise", "anticlockwise", "forward",
                      "backward", "horizontal", "vertical", "flipped", "mirrored", "normal", "inverted"}
_NUMBER_WORDS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}

# Pretrained backbones we know how to fine-tune, cheapest on a CPU first:
# (timm architecture, input px on CPU, input px on GPU).
KNOWN_BACKBONES = (
    ("resnet18", 112, 128),
    ("resnet26d", 112, 128),
    ("efficientnet_b0", 112, 128),
    ("mobilenetv3_large_100", 112, 128),
    ("convnext_nano", 96, 128),
    ("resnet50", 96, 128),
)
_GPU_PREFERENCE = ("convnext_nano", "resnet50", "resnet26d", "efficientnet_b0", "resnet18", "mobilenetv3_large_100")


def _normalised(class_names: tuple[str, ...]) -> list[str]:
    return [re.sub(r"[\s\-]+", "_", n.strip().lower()) for n in class_names]


def _all_letters(names: list[str]) -> bool:
    return bool(names) and all(len(n) == 1 and n.isalpha() for n in names)


def _all_numbers(names: list[str]) -> bool:
    return bool(names) and all(n.isdigit() or n in _NUMBER_WORDS for n in names)


def _direction_names(names: list[str]) -> list[str]:
    """The class names that name a direction (left, upside_down, clockwise...)."""
    return [n for n in names if any(part in _DIRECTION_CLASSES for part in n.split("_"))]


def _orientation(description: str, class_names: tuple[str, ...], small_images: bool) -> tuple[bool, str | None]:
    """Whether flips/rotations could change the label, and why."""
    names = _normalised(class_names)
    if _all_letters(names):
        return True, "class names are single letters, so flips and rotations would change labels"
    # Numbered classes are digits (MNIST, SVHN) or indices (dSprites orientation) on small images;
    # on photos they are usually ids standing for names (Kaggle's 0..4 for leaf diseases).
    if small_images and _all_numbers(names):
        return True, ("class names are numbers on small images (digits or indices), so flips and rotations could "
                      "change labels")
    direction = _direction_names(names)
    if direction and len(direction) * 2 >= len(names):
        return True, f"class names name directions ({', '.join(direction[:4])}), so flips would swap labels"
    m = _ORIENTATION_WORDS.search(" ".join(names).replace("_", " ")) or re.search(
        r"\bangles?\b", " ".join(names).replace("_", " ")
    )
    if m:
        return True, f"class names mention '{m.group(0)}', so flips and rotations could change labels"
    text = _NOT_DIGITS.sub(" ", description or "")
    m = _ORIENTATION_WORDS.search(text)
    if m:
        return True, f"the description mentions '{m.group(0)}', so flips and rotations could change labels"
    return False, None


def _median_original_side(profile: dict[str, Any], fallback: int) -> int:
    """Median shorter side of the source files, from the intake profile."""
    size = profile.get("image_size") if isinstance(profile, dict) else None
    try:
        w = float(size["width"]["median"])
        h = float(size["height"]["median"])
        return int(min(w, h))
    except (TypeError, KeyError, ValueError):
        return fallback


def _pick_pretrained(cache: list[str], device: str) -> str | None:
    """The cached weights we would fine-tune: a known backbone, cheapest on CPU first."""
    by_arch: dict[str, str] = {}
    for name in cache:
        arch = str(name).split(".")[0]
        by_arch.setdefault(arch, str(name))
    order = _GPU_PREFERENCE if device == "cuda" else tuple(a for a, _, _ in KNOWN_BACKBONES)
    for arch in order:
        if arch in by_arch:
            return by_arch[arch]
    return None


def backbone_to_fetch(profile: dict[str, Any], device: str) -> str | None:
    """The timm architecture the Architect would fine-tune for this dataset once its weights are cached
    (its first choice on `device`), or None where it trains from scratch anyway (small images on a CPU)."""
    h, w = (int(v) for v in (profile.get("working") or {}).get("image_size") or (32, 32))
    if device != "cuda" and not _photo_sized(max(h, w), _median_original_side(profile, min(h, w))):
        return None
    return _GPU_PREFERENCE[0] if device == "cuda" else KNOWN_BACKBONES[0][0]


def _symbols(description: str, class_names: tuple[str, ...], small_images: bool) -> bool:
    """Whether the labels are symbols (digits, letters, text) rather than directions or angles: small random
    rotations then keep them, where flips do not."""
    names = _normalised(class_names)
    words = " ".join(names).replace("_", " ")
    text = _NOT_DIGITS.sub(" ", description or "")
    if _TURN_WORDS.search(words) or _TURN_WORDS.search(text):
        return False
    if _direction_names(names):
        return False
    return (_all_letters(names) or (small_images and _all_numbers(names))
            or bool(_SYMBOL_WORDS.search(words) or _SYMBOL_WORDS.search(text)))


def read_task(brief: Brief) -> TaskFacts:
    info, profile = brief.info, brief.profile or {}
    h, w = (int(v) for v in info.get("image_size") or profile.get("working", {}).get("image_size") or (32, 32))
    side, original_side = max(h, w), _median_original_side(profile, min(h, w))
    class_names = tuple(str(c) for c in (info.get("class_names") or profile.get("classes") or ()))
    small_images = not _photo_sized(side, original_side)
    sensitive, why = _orientation(brief.description, class_names, small_images)
    top_down = bool(_TOP_DOWN_WORDS.search(brief.description or "")) and not sensitive
    reasons = (
        [why[0].upper() + why[1:] + "."] if why else ["Nothing suggests flips change labels: horizontal flips are on."]
    )
    if top_down:
        reasons.append("The description suggests top-down views: vertical flips are on.")
    num_train = int(info.get("num_train") or profile.get("splits", {}).get("train") or 0)
    return TaskFacts(
        side=side,
        original_side=original_side,
        channels=int(info.get("channels") or 3),
        num_classes=int(info.get("num_classes") or len(class_names) or 2),
        num_train=max(1, num_train),
        class_names=class_names,
        device=brief.hardware.device,
        cpu_cores=max(1, int(brief.hardware.cpu_cores)),
        gpu_memory_gb=brief.hardware.gpu_memory_gb,
        time_per_iter=float(brief.time_per_iter),
        orientation_sensitive=sensitive,
        top_down=top_down,
        symbols=sensitive and _symbols(brief.description, class_names, small_images),
        pretrained=_pick_pretrained(list(brief.pretrained_cache), brief.hardware.device),
        reasons=tuple(reasons),
        throughput=brief.throughput or None,
        background=tuple(int(v) for v in info["background"]) if info.get("background") else None,
    )
