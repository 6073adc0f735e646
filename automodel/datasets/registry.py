"""The registry of benchmark datasets (automodel/datasets/datasets.yaml) as typed entries.

    reg = load_registry()                 # the packaged datasets.yaml
    entry = reg.get("cifar10")            # UsageError naming the known names if unknown
    entry.kind                            # "network" | "local" | "shared"
    entry.published.final                 # None where the paper's number is unknown

Also where the shared datasets folder is (`shared_dir()`): the shared sets are
written by shared/tools/materialize.py, which lives next to the data.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from automodel.errors import DatasetError, UsageError

KINDS = ("network", "local", "shared")
SPLIT_RULES = ("provided-test", "val-as-test", "seeded-80-20")
SOURCE_TYPES = ("torchvision", "url", "kaggle", "sklearn", "shared")
# Environment variable naming another registry file (tests, private benchmark lists).
REGISTRY_ENV = "AUTOMODEL_DATASETS"
SHARED_ENV = "AUTOMODEL_SHARED"


@dataclass(frozen=True)
class DownloadFile:
    url: str
    filename: str
    md5: str | None               # None where no public source lists one
    checksum_source: str | None


@dataclass(frozen=True)
class Source:
    type: str                     # one of SOURCE_TYPES
    homepage: str | None = None
    files: tuple[DownloadFile, ...] = ()
    torchvision: str | None = None   # how to load a downloaded copy with torchvision
    kaggle_kind: str | None = None   # "competition" | "dataset"
    kaggle_slug: str | None = None
    shared: str | None = None        # materialize.py --dataset name
    sklearn: str | None = None
    about: str = ""
    license: str = ""

    def kaggle_command(self) -> str | None:
        if not self.kaggle_slug:
            return None
        if self.kaggle_kind == "competition":
            return f"kaggle competitions download -c {self.kaggle_slug}"
        return f"kaggle datasets download -d {self.kaggle_slug}"


@dataclass(frozen=True)
class Published:
    """The paper's numbers (fractions in [0, 1]); None where they could not be read."""

    zero_shot: float | None = None
    first_iteration: float | None = None
    final: float | None = None
    kaggle_top_accuracy: float | None = None
    kaggle_rank: str | None = None
    source: str | None = None
    note: str = ""


@dataclass(frozen=True)
class Split:
    rule: str                     # one of SPLIT_RULES
    text: str
    seed: int = 0


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    title: str
    kind: str                     # "network" | "local" | "shared"
    classes: int
    source: Source
    split: Split
    published: Published
    writer: str                   # which writer in automodel.datasets.fetch builds the folder
    image: str = ""
    images: dict[str, int | None] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # writer-specific keys (severity, csv, folders, ...)

    @property
    def offline(self) -> bool:
        return self.kind in ("local", "shared")


@dataclass(frozen=True)
class Registry:
    path: Path
    entries: dict[str, DatasetEntry]
    paper: dict[str, Any]
    protocol: dict[str, Any]

    def names(self) -> list[str]:
        return list(self.entries)

    def get(self, name: str) -> DatasetEntry:
        entry = self.entries.get(name) or self.entries.get(name.lower())
        if entry is not None:
            return entry
        close = difflib.get_close_matches(name.lower(), self.names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(
            f"No dataset named '{name}' in the registry {self.path}.{hint} "
            f"Known names: {', '.join(self.names())}. Run `automodel datasets list` to see them with their sources."
        )


def registry_path() -> Path:
    """The registry file: $AUTOMODEL_DATASETS if set, else the packaged datasets.yaml."""
    override = os.environ.get(REGISTRY_ENV)
    if override:
        return Path(override).expanduser()
    return Path(str(resources.files("automodel.datasets").joinpath("datasets.yaml")))


def load_registry(path: str | Path | None = None) -> Registry:
    path = Path(path) if path is not None else registry_path()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(
            f"The dataset registry {path} does not exist. Reinstall automodel (the file ships as "
            f"automodel/datasets/datasets.yaml), or unset {REGISTRY_ENV} if it points elsewhere."
        ) from None
    except yaml.YAMLError as err:
        raise DatasetError(
            f"The dataset registry {path} is not valid YAML ({err}). Fix the file or restore it from the repository."
        ) from None
    if isinstance(raw, dict) and "registry" in raw and "datasets" not in raw:
        # The repository's top-level datasets.yaml only points at the real file.
        return load_registry((path.parent / raw["registry"]).resolve())
    if not isinstance(raw, dict) or not isinstance(raw.get("datasets"), dict):
        raise DatasetError(f"The dataset registry {path} has no 'datasets:' mapping. Restore it from the repository.")
    entries = {name: _entry(path, name, spec) for name, spec in raw["datasets"].items()}
    return Registry(path=path, entries=entries, paper=raw.get("paper") or {}, protocol=raw.get("protocol") or {})


_ENTRY_KEYS = {"title", "kind", "classes", "image", "images", "source", "writer", "split", "published"}


def _entry(path: Path, name: str, spec: Any) -> DatasetEntry:
    def bad(what: str) -> DatasetError:
        return DatasetError(
            f"The dataset registry {path}: entry '{name}' {what}. Fix that entry (see the comments at the top of "
            "the file)."
        )

    if not isinstance(spec, dict):
        raise bad("is not a mapping")
    for key in ("title", "kind", "classes", "source", "split", "published", "writer"):
        if key not in spec:
            raise bad(f"has no '{key}'")
    if spec["kind"] not in KINDS:
        raise bad(f"has kind '{spec['kind']}' (expected one of {', '.join(KINDS)})")
    if not isinstance(spec["classes"], int) or spec["classes"] < 2:
        raise bad("must give 'classes' as an integer of at least 2")
    src = spec["source"]
    if not isinstance(src, dict) or src.get("type") not in SOURCE_TYPES:
        raise bad(f"needs source.type, one of {', '.join(SOURCE_TYPES)}")
    files = tuple(
        DownloadFile(url=f["url"], filename=f["filename"], md5=f.get("md5"), checksum_source=f.get("checksum_source"))
        for f in src.get("files") or ()
    )
    kaggle = src.get("kaggle") or {}
    source = Source(
        type=src["type"],
        homepage=src.get("homepage"),
        files=files,
        torchvision=src.get("torchvision"),
        kaggle_kind=kaggle.get("kind"),
        kaggle_slug=kaggle.get("slug"),
        shared=src.get("shared"),
        sklearn=src.get("sklearn"),
        about=" ".join(str(src.get("about") or "").split()),
        license=str(src.get("license") or ""),
    )
    split = spec["split"]
    if split.get("rule") not in SPLIT_RULES:
        raise bad(f"needs split.rule, one of {', '.join(SPLIT_RULES)}")
    pub = spec["published"] or {}
    for key in ("zero_shot", "first_iteration", "final", "kaggle_top_accuracy"):
        value = pub.get(key)
        if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
            raise bad(f"gives published.{key} = {value!r}; accuracies are fractions in [0, 1] or null")
    published = Published(
        zero_shot=pub.get("zero_shot"),
        first_iteration=pub.get("first_iteration"),
        final=pub.get("final"),
        kaggle_top_accuracy=pub.get("kaggle_top_accuracy"),
        kaggle_rank=None if pub.get("kaggle_rank") is None else str(pub.get("kaggle_rank")),
        source=pub.get("source"),
        note=str(pub.get("note") or ""),
    )
    return DatasetEntry(
        name=name,
        title=spec["title"],
        kind=spec["kind"],
        classes=spec["classes"],
        source=source,
        split=Split(
            rule=split["rule"], text=" ".join(str(split.get("text") or "").split()), seed=int(split.get("seed", 0))
        ),
        published=published,
        writer=spec["writer"],
        image=str(spec.get("image") or ""),
        images=dict(spec.get("images") or {}),
        extra={k: v for k, v in spec.items() if k not in _ENTRY_KEYS},
    )


# ----------------------------------------------------------------- shared data


def shared_candidates() -> list[tuple[str, Path]]:
    """Where the shared folder may be, in the order they are tried, with why."""
    found: list[tuple[str, Path]] = []
    env = os.environ.get(SHARED_ENV)
    if env:
        found.append((f"${SHARED_ENV}", Path(env).expanduser()))
    # A source checkout has shared/ beside the repository (CI clones it there).
    repo = Path(__file__).resolve().parents[1]
    found.append(("../shared next to the repository", repo.parent / "shared"))
    found.append(("./shared in the current directory", Path.cwd() / "shared"))
    # An installed (non-editable) package lives in site-packages: look beside the
    # checkout the user runs it from too.
    found.append(("../shared beside the current directory", Path.cwd().parent / "shared"))
    return found


def shared_dir() -> Path:
    """The shared folder (holding datasets/ and tools/materialize.py), or a DatasetError saying where we looked."""
    tried = shared_candidates()
    env = os.environ.get(SHARED_ENV)
    if env and not _is_shared(Path(env).expanduser()):
        # A wrong explicit setting must not be silently replaced by another folder.
        raise DatasetError(
            f"{SHARED_ENV}={env} is not a shared datasets folder: it must hold datasets/ and tools/materialize.py. "
            f"Point {SHARED_ENV} at the folder that holds them, or unset it to use ../shared next to the repository."
        )
    for _why, path in tried:
        if _is_shared(path):
            return path
    looked = "; ".join(f"{why}: {path}" for why, path in tried)
    raise DatasetError(
        "The shared datasets folder was not found (it must hold datasets/ and tools/materialize.py). "
        f"Looked in {looked}. Set {SHARED_ENV}=/path/to/shared, or use a network dataset or `digits`, which needs "
        "no download."
    )


def _is_shared(path: Path) -> bool:
    return (path / "datasets").is_dir() and (path / "tools" / "materialize.py").is_file()
