"""One iteration: the data bundle, the sandboxed run, honest scoring, metrics.json.

    bundle = prepare_data(ds, split, images, run_dir / "data")   # once per run
    result = run_iteration(iter_dir, bundle, RunConfig(time_limit=60))

`prepare_data` writes what the sandbox may see (training images and labels,
validation/test/predict images WITHOUT labels, info.json); the validation and
test labels stay in this process, inside the returned `DataBundle`.

`run_iteration` checks the three modules statically (contracts.py), then starts
ONE sandboxed child (sandbox_child.py) that imports them, checks them on a tiny
batch, runs a preflight, trains and predicts. This process watches the child's
events.jsonl to enforce a preflight deadline and a hard wall-clock limit, sums
the memory of its process tree, kills the whole tree when a limit is hit, and
finally scores the prediction files itself (scoring.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import stat
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from automodel.sandbox import contracts, levels as sandbox, scoring
from automodel.search.workspace import atomic_write_text

MODULES = contracts.MODULES
# harness_error: automodel's own side failed (the sandbox, the staged data, the
# child's start-up) before any generated code ran; no engineer can repair that.
STATUSES = ("ok", "failed", "contract_error", "timeout", "oom", "harness_error")
# The first event after which the child runs generated code (it imports the modules next).
GENERATED_CODE_STARTS = "data_ready"
CHILD_SCRIPT = Path(__file__).with_name("child.py")
BUNDLE_MARKER = "bundle.json"
MAX_CURVE_POINTS = 200        # per tag, after downsampling
MAX_CURVE_TAGS = 32
MAX_LOG_BYTES = 32 * 2**20    # events/curves files bigger than this are read only this far
TRAIN_EVAL_IMAGES = 500       # training images predicted after training, for the fit diagnostic
CHILD_OUTPUTS = ("events.jsonl", "curves.jsonl", "error.json", "child.json", "model.pt", "stdout.txt",
                 "stderr.txt", "metrics.json", "spec.json")


# ----------------------------------------------------------------- data bundle

@dataclass(frozen=True, eq=False)
class DataBundle:
    """What prepare_data made: a folder the sandbox reads, plus the labels it must not."""

    dir: Path
    info: dict[str, Any]                # DataInfo given to generated code (info.json)
    val_y: np.ndarray                   # int64, kept in the parent only
    test_y: np.ndarray                  # int64, kept in the parent only (may be empty)
    sets: tuple[str, ...]               # image sets written for prediction, e.g. ("val", "test", "predict")
    counts: dict[str, int]              # images per set, train included
    fingerprint: str                    # dataset fingerprint + split, identifies the bundle
    source_root: Path | None = None     # the dataset folder: never mounted into the sandbox


def _split_lists(split) -> dict[str, list[int]]:
    return {name: [int(i) for i in (getattr(split, name, None) or [])] for name in ("train", "val", "test", "predict")}


def _labels(ds, indices: list[int]) -> np.ndarray:
    labels = [ds.items[i].label for i in indices]
    if any(label is None for label in labels):
        raise ValueError("an image in a labelled split has no label")
    return np.asarray(labels, dtype=np.int64)


def _data_info(ds, split, images, train_indices: list[int]) -> dict[str, Any]:
    """DataInfo for generated code (intake's), with image_size as a plain list."""
    from automodel.intake import data_info

    info = dict(data_info(ds, images, train_indices))
    info["image_size"] = [int(s) for s in info["image_size"]]
    return info


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    os.replace(tmp, path)


def prepare_data(ds, split, images, dest: Path, *, device: str = "cpu") -> DataBundle:
    """Write the sandbox's inputs into `dest` and return them with the held-out labels.

    dest gets train_x/train_y/val_x/test_x[/predict_x].npy and info.json; the
    validation and test labels are returned in the bundle and never written.
    A dest already prepared for the same dataset fingerprint and split is reused.
    """
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    lists = _split_lists(split)
    if not lists["train"] or not lists["val"]:
        raise ValueError("the split needs at least one training and one validation image")
    digest = hashlib.sha256(json.dumps([str(ds.fingerprint), lists], sort_keys=True).encode()).hexdigest()[:16]
    array = images.array
    val_y = _labels(ds, lists["val"])
    test_y = _labels(ds, lists["test"]) if lists["test"] else np.zeros(0, dtype=np.int64)
    sets = tuple(name for name in ("val", "test", "predict") if lists[name])
    counts = {name: len(lists[name]) for name in ("train", "val", "test", "predict")}
    root = Path(ds.root) if getattr(ds, "root", None) else None

    marker = dest / BUNDLE_MARKER
    if marker.is_file():
        try:
            old = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        files = ["train_x.npy", "train_y.npy", "info.json"] + [f"{name}_x.npy" for name in sets]
        if old.get("fingerprint") == digest and old.get("shape") == list(array.shape[1:]) and all((dest / f).is_file() for f in files):
            info = json.loads((dest / "info.json").read_text(encoding="utf-8"))
            if info.get("device") != device:
                info["device"] = device
                atomic_write_text(dest / "info.json", json.dumps(info, indent=2))
            return DataBundle(dest, info, val_y, test_y, sets, counts, digest, root)

    marker.unlink(missing_ok=True)
    train_x = np.ascontiguousarray(array[lists["train"]])
    _atomic_save(dest / "train_x.npy", train_x)
    _atomic_save(dest / "train_y.npy", _labels(ds, lists["train"]))
    for name in ("val", "test", "predict"):
        path = dest / f"{name}_x.npy"
        if lists[name]:
            _atomic_save(path, np.ascontiguousarray(array[lists[name]]))
        else:
            path.unlink(missing_ok=True)
    for stale in ("val_y.npy", "test_y.npy"):  # never leave labels where the sandbox looks
        (dest / stale).unlink(missing_ok=True)
    info = _data_info(ds, split, images, lists["train"])
    info.update({"device": device, "pretrained_available": False})
    atomic_write_text(dest / "info.json", json.dumps(info, indent=2))
    atomic_write_text(marker, json.dumps({"fingerprint": digest, "shape": list(array.shape[1:]), "counts": counts}, indent=2))
    return DataBundle(dest, info, val_y, test_y, sets, counts, digest, root)


# ------------------------------------------------------------ config / result

@dataclass(frozen=True)
class RunConfig:
    time_limit: float = 60.0            # seconds of training (ctx.time_budget)
    device: str = "cpu"                 # "cpu" or "cuda"
    seed: int = 0                       # seeds python, numpy and torch in the child
    threads: int = 0                    # torch/OMP threads; 0 = all cores
    preflight: bool = True              # run the tiny-subset preflight before training
    preflight_steps: int = 3            # batches in the preflight
    preflight_subset: int = 64          # training images in the preflight
    preflight_limit: float = 60.0       # s from launch until the preflight must have passed
    interrupt_grace: float | None = None  # s past the deadline before train() is interrupted (None: 5 + 10%)
    kill_grace: float = 15.0            # s after that before the parent kills the tree
    predict_allowance: float = 120.0    # s for prediction and saving after training
    memory_limit: int | None = None     # bytes for the whole tree; None = 75% of RAM
    sandbox: str | None = None          # force a level: "bwrap" | "unshare" | "none"
    loader_workers: int = 0             # DataLoader workers for data.loader()
    cache_dir: Path | None = None       # Hugging Face hub cache with pretrained weights (read-only in the sandbox)
    pretrained_available: bool | None = None  # overrides info.pretrained_available (None: the bundle's)
    hidden: tuple[Path, ...] = ()       # more host paths to keep out of the sandbox

    def grace(self) -> float:
        return self.interrupt_grace if self.interrupt_grace is not None else 5.0 + 0.1 * self.time_limit


@dataclass(frozen=True)
class ErrorInfo:
    phase: str                  # static | import | contract | preflight | train | predict | sandbox | score
    module: str | None          # data | model | train, or None when no module is to blame
    type: str                   # exception type, or SyntaxError/Timeout/OutOfMemory/...
    message: str
    traceback: str = ""         # tail of the child's traceback

    def text(self) -> str:
        """Readable one-block description, for people and for repair prompts."""
        who = f"{self.module}.py" if self.module else "the pipeline"
        head = f"{who} failed in phase '{self.phase}' with {self.type}: {self.message}"
        return head + (f"\n{self.traceback}" if self.traceback else "")


@dataclass(frozen=True)
class SandboxInfo:
    kind: str                   # bwrap | unshare | none
    missing: tuple[str, ...]    # protections not in force


@dataclass(frozen=True)
class IterationResult:
    """What one iteration produced; metrics.json is `to_dict()`.

    timings (seconds): static_check (parent, before launch), sandbox_start
    (launch to the child's first instant), imports (torch, numpy), data_ready
    (memory-mapping the bundle), contract (importing the modules and checking
    them on a tiny batch), preflight (a few training steps on a subset, which
    also warms up the kernels), first_batch (training start to the first
    ctx.should_stop() call), training, prediction (val/test/predict sets and
    model.pt), total (parent's clock, everything). A phase that never ran is
    absent.
    """

    status: str                                 # ok | failed | contract_error | timeout | oom
    val_accuracy: float | None
    test_accuracy: float | None
    error: ErrorInfo | None
    curves: dict[str, list[list[float]]]        # tag -> [[step, value], ...] (<= 200 points)
    timings: dict[str, float]                   # seconds per phase (see _timings)
    sandbox: SandboxInfo
    # Accuracy on a fixed sample of training images predicted like validation
    # (eval mode, no augmentation, no MixUp): how well the training set is fit,
    # whatever the augmentation and loss do to the logged training curve.
    train_eval_accuracy: float | None = None
    interrupted: bool = False                   # train() overran and was interrupted
    used_checkpoint: bool = False               # predictions come from ctx.checkpoint() weights
    exit_code: int | None = None
    peak_memory_mb: float | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IterationResult":
        data = dict(data)
        data["error"] = ErrorInfo(**data["error"]) if data.get("error") else None
        sb = data.get("sandbox") or {"kind": "none", "missing": []}
        data["sandbox"] = SandboxInfo(sb["kind"], tuple(sb.get("missing", ())))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, path: Path) -> "IterationResult":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


# ------------------------------------------------------------ reading outputs

def _read_child_text(path: Path, limit: int = MAX_LOG_BYTES) -> str:
    try:
        return scoring.read_untrusted(path, max_bytes=limit, truncate=True).decode("utf-8", "replace")
    except scoring.ScoringError:
        return ""


def _jsonl(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _num(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def read_curves(path: Path) -> dict[str, list[list[float]]]:
    """Training curves from curves.jsonl, preflight excluded, <= MAX_CURVE_POINTS per tag."""
    series: dict[str, list[list[float]]] = {}
    for rec in _jsonl(_read_child_text(path)):
        if rec.get("phase") != "train":
            continue
        tag, step, value = rec.get("tag"), _num(rec.get("step")), _num(rec.get("value"))
        if not isinstance(tag, str) or step is None or value is None or len(tag) > 64:
            continue
        if tag not in series and len(series) >= MAX_CURVE_TAGS:
            continue
        series.setdefault(tag, []).append([int(step), value])
    return {tag: downsample(points) for tag, points in series.items()}


def downsample(points: list[list[float]], limit: int = MAX_CURVE_POINTS) -> list[list[float]]:
    """Evenly spaced points, first and last kept."""
    if len(points) <= limit:
        return points
    idx = np.unique(np.linspace(0, len(points) - 1, limit).round().astype(int))
    return [points[i] for i in idx]


class EventLog:
    """Incremental reader of the child's events.jsonl: first time each phase was seen."""

    def __init__(self, path: Path):
        self.path = path
        self.wall: dict[str, float] = {}        # phase -> child's clock (time.time())
        self.seen_at: dict[str, float] = {}     # phase -> parent's clock when first read
        self.extra: dict[str, dict] = {}
        self.last_phase: str | None = None
        self._offset = 0

    def poll(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return
        with os.fdopen(fd, "rb") as fh:
            if self._offset >= MAX_LOG_BYTES:
                return
            fh.seek(self._offset)
            chunk = fh.read(MAX_LOG_BYTES - self._offset)
        end = chunk.rfind(b"\n")
        if end < 0:
            return
        self._offset += end + 1
        now = time.time()
        for rec in _jsonl(chunk[:end + 1].decode("utf-8", "replace")):
            phase = rec.get("phase")
            if not isinstance(phase, str) or len(phase) > 64:
                continue
            self.last_phase = phase
            if phase not in self.seen_at:
                self.seen_at[phase] = now
                wall = _num(rec.get("wall"))
                if wall is not None:
                    self.wall[phase] = wall
                self.extra[phase] = {k: v for k, v in rec.items() if isinstance(v, (int, float, str)) and k not in ("phase", "wall")}


def _timings(events: EventLog, launched: float, ended: float, static_s: float) -> dict[str, float]:
    """Seconds per phase. The child's clock is only trusted for durations inside
    it; start-up is measured from the parent's launch to the child's first line."""
    w = events.wall
    t0 = _num(events.extra.get("start", {}).get("t0"))

    def span(a: float | None, b: float | None) -> float | None:
        if a is None or b is None:
            return None
        return round(max(0.0, b - a), 4)

    out = {
        "static_check": round(static_s, 4),
        "sandbox_start": span(launched, t0),
        "imports": span(t0, w.get("imports_done")),
        "data_ready": span(w.get("imports_done"), w.get("data_ready")),
        "contract": span(w.get("data_ready"), w.get("contract_ok")),
        "preflight": span(w.get("contract_ok"), w.get("preflight_ok")),
        "first_batch": span(w.get("train_start"), w.get("train_first_batch")),
        "training": span(w.get("train_start"), w.get("train_done")),
        "prediction": span(w.get("train_done"), w.get("predict_done")),
        "total": round(ended - launched + static_s, 4),
    }
    return {k: v for k, v in out.items() if v is not None}


def _child_error(iter_dir: Path) -> dict | None:
    text = _read_child_text(iter_dir / "error.json", 1_000_000)
    if not text:
        return None
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    module = raw.get("module")
    return {
        "phase": str(raw.get("phase", "train"))[:32],
        "module": module if module in MODULES else None,
        "type": str(raw.get("type", "Error"))[:100],
        "message": str(raw.get("message", ""))[:2000],
        "traceback": _tail(str(raw.get("traceback", ""))),
    }


def _tail(text: str, lines: int = 30, chars: int = 4000) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])[-chars:]


def _child_report(iter_dir: Path) -> dict:
    text = _read_child_text(iter_dir / "child.json", 100_000)
    try:
        raw = json.loads(text) if text else {}
    except ValueError:
        raw = {}
    return raw if isinstance(raw, dict) else {}


# -------------------------------------------------------------- the iteration

def default_memory_limit() -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 8 * 2**30
    return int(total * 0.75)


def _clean(iter_dir: Path) -> None:
    for name in CHILD_OUTPUTS:
        (iter_dir / name).unlink(missing_ok=True)
    for path in iter_dir.glob("probs_*.npy"):
        path.unlink(missing_ok=True)


def _remove_planted_entries(iter_dir: Path) -> None:
    """Delete links, fifos, sockets and devices the child left in its directory,
    so no later trusted step (scoring, copying best/, reports) is led to a host
    file through them; and the fallback levels' scratch HOME."""
    shutil.rmtree(iter_dir / ".tmp", ignore_errors=True)
    for dirpath, dirnames, filenames in os.walk(iter_dir, followlinks=False):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue
            if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                try:
                    os.unlink(path)
                except OSError:
                    pass


def _spec(layout: sandbox.Layout, bundle: DataBundle, config: RunConfig, threads: int) -> dict:
    info = dict(bundle.info)
    info["device"] = config.device
    if config.pretrained_available is not None:
        info["pretrained_available"] = bool(config.pretrained_available)
    return {
        "mode": "fit",
        "pipeline_dir": str(layout.iter_dir),
        "data_dir": str(layout.data_dir),
        "out_dir": str(layout.iter_dir),
        "info": info,
        "seed": int(config.seed),
        "device": config.device,
        "threads": threads,
        "time_budget": float(config.time_limit),
        "interrupt_grace": float(config.grace()),
        "loader_workers": int(config.loader_workers),
        "preflight": {"enabled": bool(config.preflight), "max_steps": int(config.preflight_steps),
                      "subset": int(config.preflight_subset),
                      # The child's own limit, well inside the parent's (which also covers start-up and imports).
                      "time_budget": max(2.0, 0.8 * float(config.preflight_limit) - 1.0)},
        "predict_sets": list(bundle.sets),
        "train_eval_indices": train_eval_indices(bundle.counts["train"]),
    }


def _request(level: str, iter_dir: Path, bundle: DataBundle, config: RunConfig, threads: int, marker: str) -> tuple[sandbox.Request, sandbox.Layout]:
    cache = Path(config.cache_dir) if config.cache_dir and Path(config.cache_dir).is_dir() else None
    layout = sandbox.layout(level, iter_dir, bundle.dir, cache)
    hidden = tuple(p for p in (bundle.source_root, iter_dir.parent, *config.hidden) if p)
    if level == "bwrap":
        env = sandbox.base_env(threads)
        harness = Path("/sandbox/harness.py")
        mounts = [sandbox.Mount(m.host, m.inside) for m in sandbox.python_mounts(hidden)]
        mounts += [sandbox.Mount(bundle.dir.resolve(), layout.data_dir),
                   sandbox.Mount(iter_dir.resolve(), layout.iter_dir, writable=True)]
        if cache:
            mounts.append(sandbox.Mount(cache.resolve(), layout.cache_dir))
        # The stored sources and the spec stay as written: laid read-only over the writable dir.
        ro_files = [sandbox.Mount(CHILD_SCRIPT.resolve(), harness)]
        ro_files += [sandbox.Mount((iter_dir / name).resolve(), layout.iter_dir / name)
                     for name in ("data.py", "model.py", "train.py", "spec.json")]
    else:
        scratch = iter_dir / ".tmp"
        scratch.mkdir(exist_ok=True)
        env = sandbox.base_env(threads, home=str(scratch), tmp=str(scratch))
        harness = CHILD_SCRIPT.resolve()
        mounts, ro_files = [], []
    if layout.cache_dir:
        # Only the hub folder is visible (automodel.weights): timm finds the weights through HF_HUB_CACHE.
        env["HF_HUB_CACHE"] = str(layout.cache_dir)
    request = sandbox.Request(
        argv=(sys.executable, "-I", "-B", str(harness), str(layout.iter_dir / "spec.json")),
        cwd=layout.iter_dir, stdout=iter_dir / "stdout.txt", stderr=iter_dir / "stderr.txt",
        mounts=tuple(mounts), ro_files=tuple(ro_files), env=env, hidden=hidden,
        gpu=config.device.startswith("cuda"), marker=marker,
    )
    return request, layout


def _result(status, config, level, *, error=None, val=None, test=None, train_eval=None, curves=None, timings=None,
            report=None, exit_code=None, peak=None) -> IterationResult:
    report = report or {}
    return IterationResult(
        status=status, val_accuracy=val, test_accuracy=test, train_eval_accuracy=train_eval,
        error=ErrorInfo(**error) if isinstance(error, dict) else error,
        curves=curves or {}, timings=timings or {},
        sandbox=SandboxInfo(level, sandbox.MISSING.get(level, ())),
        interrupted=bool(report.get("interrupted", False)),
        used_checkpoint=bool(report.get("used_checkpoint", False)),
        exit_code=exit_code, peak_memory_mb=round(peak / 2**20, 1) if peak else None,
        config=json.loads(json.dumps(asdict(config), default=str)),
    )


def _save(iter_dir: Path, result: IterationResult) -> IterationResult:
    atomic_write_text(iter_dir / "metrics.json", json.dumps(result.to_dict(), indent=2))
    return result


def _signal_name(code: int) -> str | None:
    sig = -code if code < 0 else code - 128 if 128 < code < 160 else None
    if sig is None:
        return None
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def run_iteration(iter_dir: Path, bundle: DataBundle, config: RunConfig = RunConfig()) -> IterationResult:
    """Run the pipeline in `iter_dir` (data.py, model.py, train.py) once and score it.

    Never raises for anything the generated code does: every outcome is an
    IterationResult, also written to iter_dir/metrics.json.
    """
    iter_dir = Path(iter_dir).resolve()  # the child runs elsewhere: it gets absolute paths only
    t_start = time.time()
    _clean(iter_dir)
    level = sandbox.choose_level(config.sandbox)

    issues = contracts.check_pipeline_dir(iter_dir)
    static_s = time.time() - t_start
    if issues:
        first = issues[0]
        message = "\n".join(i.message for i in issues) if len(issues) > 1 else first.message
        error = {"phase": "static", "module": first.module, "type": "SyntaxError" if first.kind == "syntax" else "ContractError",
                 "message": message, "traceback": ""}
        return _save(iter_dir, _result("contract_error", config, level, error=error, timings={"static_check": round(static_s, 4), "total": round(static_s, 4)}))

    sandbox.warn_if_weak(level)
    threads = config.threads or os.cpu_count() or 1
    marker = uuid.uuid4().hex
    request, layout = _request(level, iter_dir, bundle, config, threads, marker)
    atomic_write_text(iter_dir / "spec.json", json.dumps(_spec(layout, bundle, config, threads), indent=2))
    for name in ("stdout.txt", "stderr.txt"):
        (iter_dir / name).write_bytes(b"")

    memory_limit = config.memory_limit or default_memory_limit()
    events = EventLog(iter_dir / "events.jsonl")
    proc = sandbox.start(request, level)
    launched = proc.started
    outcome = _watch(proc, events, config, memory_limit)
    proc.kill()  # strays (a background `sleep`, workers) go too, also after a normal exit
    ended = time.time()
    _remove_planted_entries(iter_dir)
    events.poll()

    timings = _timings(events, launched, ended, static_s)
    curves = read_curves(iter_dir / "curves.jsonl")
    report = _child_report(iter_dir)
    common = dict(curves=curves, timings=timings, report=report, exit_code=outcome["exit_code"], peak=outcome["peak"])
    stderr_tail = _tail(_read_child_text(iter_dir / "stderr.txt")[-20000:], lines=20, chars=3000)

    if GENERATED_CODE_STARTS not in events.seen_at and outcome["status"] != "oom" and (outcome["exit_code"] != 0 or outcome["status"] == "timeout"):
        return _save(iter_dir, _result("harness_error", config, level, error=_harness_error(events, outcome, config, stderr_tail), **common))

    if outcome["status"] in ("timeout", "oom"):
        err = {"phase": outcome["phase"], "module": outcome.get("module"), "type": "Timeout" if outcome["status"] == "timeout" else "OutOfMemory",
               "message": outcome["message"], "traceback": stderr_tail}
        return _save(iter_dir, _result(outcome["status"], config, level, error=err, **common))

    code = outcome["exit_code"]
    if code != 0:
        err = _child_error(iter_dir)
        if err is None:
            sig = _signal_name(code)
            phase = events.last_phase or "sandbox"
            if sig == "SIGKILL":
                return _save(iter_dir, _result("oom", config, level, error={
                    "phase": phase, "module": None, "type": "OutOfMemory",
                    "message": "the sandboxed process was killed by SIGKILL, most likely by the kernel's out-of-memory killer; use a smaller batch size or model.",
                    "traceback": stderr_tail}, **common))
            msg = (f"the sandboxed process died from {sig}" if sig else f"the sandboxed process exited with code {code}") + \
                  f" after phase '{phase}' without reporting an error" + ("" if level != "bwrap" or events.wall else "; the sandbox itself may have failed to start (see stderr)")
            err = {"phase": phase, "module": None, "type": "Crashed", "message": msg, "traceback": stderr_tail}
        status = "contract_error" if err["phase"] in ("import", "contract") else "failed"
        return _save(iter_dir, _result(status, config, level, error=err, **common))

    try:
        num_classes = int(bundle.info["num_classes"])
        val = scoring.score_file(iter_dir / "probs_val.npy", bundle.val_y, num_classes)
        test = scoring.score_file(iter_dir / "probs_test.npy", bundle.test_y, num_classes) if "test" in bundle.sets else None
        if "predict" in bundle.sets:
            scoring.load_probs(iter_dir / "probs_predict.npy", bundle.counts["predict"], num_classes)
    except scoring.ScoringError as exc:
        err = {"phase": "score", "module": None, "type": "BadPredictions", "message": str(exc), "traceback": ""}
        return _save(iter_dir, _result("failed", config, level, error=err, **common))
    return _save(iter_dir, _result("ok", config, level, val=round(val, 6), test=None if test is None else round(test, 6),
                                   train_eval=_train_eval_accuracy(iter_dir, bundle, num_classes), **common))


def _harness_error(events: EventLog, outcome: dict, config: RunConfig, stderr_tail: str) -> dict:
    """The child failed before it ran any generated code: the sandbox, the staged data or the harness broke."""
    last = events.last_phase or "none (it never started)"
    if outcome["status"] == "timeout":
        what = f"the sandboxed harness did not get its data ready within {config.preflight_limit:.0f} s"
    else:
        sig = _signal_name(outcome["exit_code"])
        what = f"the sandboxed harness {'died from ' + sig if sig else 'exited with code ' + str(outcome['exit_code'])}"
    return {"phase": "sandbox", "module": None, "type": "HarnessError",
            "message": f"{what} before running any generated code (last event: {last}). This is a problem of automodel's side "
                       "(the sandbox, the staged data in the run's data/ folder, or the machine), not of the pipeline; "
                       "its stderr ends with the lines below.",
            "traceback": stderr_tail}


def train_eval_indices(num_train: int) -> list[int]:
    """The training images predicted after training (evenly spread, at most TRAIN_EVAL_IMAGES)."""
    k = min(num_train, TRAIN_EVAL_IMAGES)
    return sorted({int(i) for i in np.linspace(0, num_train - 1, k).round()}) if k > 0 else []


def _train_eval_accuracy(iter_dir: Path, bundle: DataBundle, num_classes: int) -> float | None:
    """A diagnostic, not a score: missing or malformed predictions just leave it unknown."""
    try:
        labels = np.load(bundle.dir / "train_y.npy")[train_eval_indices(bundle.counts["train"])]
        return round(scoring.score_file(iter_dir / "probs_train.npy", labels, num_classes), 6)
    except (OSError, ValueError, IndexError, scoring.ScoringError):
        return None


def _watch(proc: sandbox.Sandboxed, events: EventLog, config: RunConfig, memory_limit: int) -> dict:
    """Wait for the child, enforcing the phase deadlines and the memory limit.

    Deadlines are set from the parent's clock when a phase is first observed
    and only move forward (preflight -> training -> prediction), so a child
    that forges events cannot extend its time beyond the sum of the limits.
    """
    launched = proc.started
    train_window = config.time_limit + config.grace() + config.kill_grace
    hard_deadline = launched + config.preflight_limit + train_window + config.predict_allowance
    stage = "preflight"
    deadline = launched + config.preflight_limit
    peak = 0
    next_mem = 0.0
    while True:
        try:
            code = proc.popen.wait(timeout=0.1)
        except Exception:  # subprocess.TimeoutExpired
            code = None
        events.poll()
        now = time.time()
        if code is not None:
            return {"status": "exited", "exit_code": code, "peak": peak}
        if stage == "preflight" and ("preflight_ok" in events.seen_at or (not config.preflight and "contract_ok" in events.seen_at)):
            stage, deadline = "train", now + train_window
        if stage == "train" and "train_done" in events.seen_at:
            stage, deadline = "predict", now + config.predict_allowance
        if stage != "ending" and ("failed" in events.seen_at or "done" in events.seen_at):
            # The child is writing its last files and exiting: a short, fixed allowance.
            stage, deadline = "ending", events.seen_at.get("failed", events.seen_at.get("done")) + 15
        if now >= next_mem:
            next_mem = now + 0.5
            used = proc.memory_bytes()
            peak = max(peak, used)
            if used > memory_limit:
                proc.kill()
                module = "train" if stage != "predict" else "model"
                return {"status": "oom", "exit_code": proc.poll(), "peak": peak, "phase": events.last_phase or stage, "module": module,
                        "message": f"the pipeline's processes used {used / 2**30:.1f} GiB, more than the limit of {memory_limit / 2**30:.1f} GiB, and were killed. Use a smaller batch size, model or number of DataLoader workers."}
        if now >= min(deadline, hard_deadline):
            proc.kill()
            return {"status": "timeout", "exit_code": proc.poll(), "peak": peak, **_timeout_message(stage, events, config)}


def _timeout_message(stage: str, events: EventLog, config: RunConfig) -> dict:
    if stage == "preflight":
        phase = events.last_phase or "sandbox"
        module = "train" if "contract_ok" in events.seen_at else ("model" if "data_ready" in events.seen_at else None)
        return {"phase": "preflight", "module": module,
                "message": f"the preflight (import, contract check and {config.preflight_steps} training batches on {config.preflight_subset} images) did not finish within {config.preflight_limit:.0f} s (last event: {phase}). "
                           "Check for an endless loop or a blocking call, and make train() check ctx.should_stop() at every batch."}
    if stage == "train":
        return {"phase": "train", "module": "train",
                "message": f"train() ran past its {config.time_limit:.0f} s budget and could not be interrupted within {config.grace() + config.kill_grace:.0f} s more, so the whole process tree was killed. "
                           "Check ctx.should_stop() at every batch and return promptly; do not catch every exception or ignore signals."}
    if stage == "ending":
        phase = "predict" if "done" in events.seen_at else (events.last_phase or "train")
        return {"phase": phase, "module": None,
                "message": "the sandboxed process finished its work but did not exit within 15 s (a thread or subprocess it started kept it alive), so it was killed."}
    return {"phase": "predict", "module": "model",
            "message": f"predicting the validation/test images and saving the model took more than {config.predict_allowance:.0f} s; the model is probably far too slow for this time budget."}
