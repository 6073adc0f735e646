"""Pretrained timm weights: found in the user's Hugging Face hub cache, and fetched into it.

The sandbox never downloads (it has no network). `find_cached()` looks where
huggingface_hub itself would look, and lists the timm models whose weights file
is in the cache, so the Architect can fine-tune one instead of training from
scratch. Only that hub folder is mounted into the sandbox, read-only: never
its parent (~/.cache also holds automodel's decode cache, with labels).

`fetch(names)` fills the cache in this trusted process, through timm's own
loader and huggingface_hub (`automodel weights fetch`, `fit --download-weights`);
it honours HF_ENDPOINT, HF_HUB_CACHE/HF_HOME and HF_HUB_OFFLINE like they do.
"""

from __future__ import annotations

import ast
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from automodel.errors import WeightsError

# Files timm's loader reads from a hub snapshot, in its order of preference.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
TIMM_PREFIX = "models--timm--"


@dataclass(frozen=True)
class WeightsCache:
    hub_dir: Path | None            # the hub cache folder (mounted read-only), None when there is none
    names: tuple[str, ...] = ()     # timm weight names in it, e.g. ("resnet18.a1_in1k",)


def hub_cache_dir(env: dict[str, str] | None = None) -> Path:
    """Where huggingface_hub keeps downloads: $HF_HUB_CACHE, $HF_HOME/hub, or ~/.cache/huggingface/hub."""
    env = os.environ if env is None else env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _has_weights(model_dir: Path) -> bool:
    snapshots = model_dir / "snapshots"
    if not snapshots.is_dir():
        return False
    return any((snap / f).is_file() for snap in snapshots.iterdir() for f in WEIGHT_FILES)


def find_cached(env: dict[str, str] | None = None) -> WeightsCache:
    """The timm weights available offline, sorted by name; an empty cache when there are none.

    A cache folder that cannot be read counts as empty: the run trains from
    scratch instead of failing before its first iteration."""
    hub = hub_cache_dir(env)
    try:
        if not hub.is_dir():
            return WeightsCache(None)
        names = sorted(d.name[len(TIMM_PREFIX):] for d in hub.iterdir()
                       if d.name.startswith(TIMM_PREFIX) and d.is_dir() and _has_weights(d))
        return WeightsCache(hub.resolve() if names else None, tuple(names))
    except OSError:
        return WeightsCache(None)


DEFAULT_ENDPOINT = "https://huggingface.co"
REACH_TIMEOUT = 5.0   # s to open a connection to the hub before calling it unreachable
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


@dataclass(frozen=True)
class Fetched:
    requested: str          # what the user asked for, e.g. "resnet18"
    name: str               # the timm weights it resolved to, e.g. "resnet18.a1_in1k"
    repo: str               # the hub repository, e.g. "timm/resnet18.a1_in1k"
    hub_dir: Path           # the cache it is in
    seconds: float
    downloaded: bool        # False: it was already in the cache
    checked: bool           # True: the hub was asked (a newer file would have been downloaded)

    def text(self) -> str:
        how = (f"downloaded in {self.seconds:.1f} s" if self.downloaded else
               "already in the cache" + ("" if self.checked else " (the hub could not be asked for a newer one)"))
        alias = f" ({self.requested})" if self.requested != self.name else ""
        return f"automodel: pretrained weights {self.name}{alias}: {how}, in {self.hub_dir}"


def endpoint(env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return (env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def resolve(name: str) -> tuple[str, str]:
    """(weights name, hub repository) timm would load for `name` ("resnet18" -> its default tag)."""
    import timm
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name) if timm.is_model(name) else None
    except RuntimeError:  # a known architecture with a tag timm does not have
        cfg = None
    if cfg is None:
        arch = name.split(".")[0]
        tags = timm.list_pretrained(f"{arch}.*")[:6] if timm.is_model(arch) else []
        hint = f"Known weights for {arch}: {', '.join(tags)}." if tags else (
            "List them with `python -c \"import timm; print(timm.list_pretrained('resnet*'))\"`.")
        raise WeightsError(f"timm has no pretrained weights called {name!r}. {hint}")
    repo = cfg.hf_hub_id or ""
    if not repo.startswith("timm/"):
        raise WeightsError(
            f"The weights {name!r} are not published in the Hugging Face hub's timm organisation, so the sandbox "
            f"could not find them in the cache. Choose weights listed by "
            f"`python -c \"import timm; print(timm.list_pretrained('{name.split('.')[0]}*'))\"`.")
    return repo.split("/", 1)[1], repo


def _later(names: list[str]) -> str:
    return f"automodel weights fetch {' '.join(names)}"


def _reachable(url: str) -> str | None:
    """None when a connection to the hub opens (or a proxy is in charge), else why not."""
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return None
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=REACH_TIMEOUT):
            return None
    except OSError as err:
        return f"{type(err).__name__}: {err.strerror or err}"


def fetch(names: list[str]) -> list[Fetched]:
    """Download the timm weights `names` into the user's Hugging Face cache through timm and huggingface_hub.

    Runs here, in the trusted parent, never in the sandbox. WeightsError names the weights and the command
    to run later when the hub cannot be reached, and what else went wrong otherwise."""
    resolved = [(n, *resolve(n)) for n in names]
    cached = set(find_cached().names)
    missing = [name for _, name, _ in resolved if name not in cached]
    hub = endpoint()
    offline = "HF_HUB_OFFLINE is set" if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") \
        else _reachable(hub)
    if offline and missing:
        raise WeightsError(
            f"Cannot download the pretrained weights {', '.join(missing)}: the Hugging Face hub at {hub} cannot be "
            f"reached ({offline}). When you are online, run `{_later(missing)}`; until then fit trains from scratch "
            f"(without --download-weights).")
    out = []
    for requested, name, repo in resolved:
        start = time.monotonic()
        if not (offline and name in cached):
            _download(name, repo, hub)
        out.append(Fetched(requested, name, repo, hub_cache_dir(), time.monotonic() - start,
                           downloaded=name not in cached, checked=not offline))
    return out


def _download(name: str, repo: str, hub: str) -> None:
    import timm
    from huggingface_hub import errors as hf_errors

    try:
        timm.create_model(name, pretrained=True)  # timm's loader: hf_hub_download into the cache, then load it
    except (hf_errors.RepositoryNotFoundError, hf_errors.RemoteEntryNotFoundError, hf_errors.RevisionNotFoundError):
        raise WeightsError(
            f"The Hugging Face hub at {hub} has no weights file for {name} (repository {repo}). Check the name, "
            f"or HF_ENDPOINT if you use a mirror.") from None
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled, hf_errors.HfHubHTTPError,
            ConnectionError, TimeoutError) as err:
        raise WeightsError(
            f"Downloading the pretrained weights {name} from {hub} failed ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}). When the hub can be reached, run `{_later([name])}`.") from None
    except Exception as err:  # noqa: BLE001 - a file that downloaded but does not load
        raise WeightsError(
            f"The weights {name} were downloaded from {hub} but timm could not load them ({type(err).__name__}: "
            f"{str(err)[:200]}). Delete {hub_cache_dir() / (TIMM_PREFIX + name)} and run `{_later([name])}` "
            f"again.") from None


def named_in(source: str, names: tuple[str, ...] | list[str]) -> list[str]:
    """The cached weight names that `source` (a model.py) spells out as string constants."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    return [n for n in names if n in strings]
