"""The harness half that runs INSIDE the sandbox, next to the untrusted modules.

It is a stand-alone script (no automodel imports) so the sandbox needs nothing
but Python and the ML libraries. It is as untrusted as the code it runs: the
parent never believes a number it writes except the predictions, which it
scores itself against labels this process never sees.

    python sandbox_child.py SPEC.json

SPEC.json (written by the parent, paths as seen inside the sandbox):
    mode            "train" (contract check, preflight, training, model.pt) or
                    "predict" (load weights, predict each set); an iteration
                    runs one of each, in two processes, so that the parent,
                    not a claim of this one, ends the training
    pipeline_dir    folder with data.py, model.py, train.py
    data_dir        train: train_x.npy, train_y.npy; predict: <set>_x.npy only (no labels)
    out_dir         where everything below is written
    info            the DataInfo fields given to generated code
    seed, device, threads, time_budget (training seconds)
    preflight       {"enabled": bool, "max_steps": int, "subset": int, "time_budget": s}
                    (time_budget counts from the script's start; train() is
                    interrupted and blamed when the preflight is still running then)
    interrupt_grace seconds past time_budget before a train() that ignores
                    should_stop() is interrupted (then saved from its checkpoint)
    loader_workers  DataLoader workers for data.loader()
    predict_sets    (predict) names of the sets to predict, e.g. ["val", "test", "train_sample"]
    weights         (predict) path of a saved state dict

Outputs in out_dir:
    events.jsonl    one {"phase", "wall": time.time(), ...} per line, in order:
                    start (with t0, the script's first instant), imports_done,
                    data_ready, contract_ok, preflight_first_batch, preflight_ok,
                    train_start, train_first_batch, train_done, saved (train) or
                    predict_done (predict), done; or failed (with stage) after
                    error.json was written
    curves.jsonl    {"tag", "value", "step", "t", "phase"} per ctx.log() call
    model.pt        (train) the trained state dict
    probs_<set>.npy (predict) float32 softmax (N, num_classes) for each set
    error.json      on failure: {phase, module, type, message, traceback}
    child.json      {"interrupted": bool, "used_checkpoint": bool}
Exit status: 0 done, 3 import/contract failure, 4 any later failure.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import random
import signal
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

T0 = time.time()
MODULES = ("data", "model", "train")
# The packages generated code is told it may use (templates/prompts/_rules.j2), by import name.
MAIN_PACKAGES = ("torch", "torchvision", "timm", "numpy", "albumentations", "PIL")
EXIT_CONTRACT = 3
EXIT_ERROR = 4


class HarnessFailure(Exception):
    """A failure the harness diagnosed itself, with the module to blame."""

    def __init__(self, module: str, message: str):
        super().__init__(message)
        self.module = module


class TrainingOverran(Exception):
    """Raised inside train() when it ignores ctx.should_stop() past the deadline."""


class Recorder:
    """Append-only event and curve files; small and flushed so a kill loses little."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self._events = open(out_dir / "events.jsonl", "a", encoding="utf-8")
        self._curves = open(out_dir / "curves.jsonl", "a", encoding="utf-8")
        self._flushed = time.time()
        self.phase = "start"     # the harness's own stage, for blaming a failure

    def event(self, phase: str, **extra) -> None:
        self._events.write(json.dumps({"phase": phase, "wall": time.time(), **extra}) + "\n")
        self._events.flush()

    def curve(self, tag: str, value: float, step: int, phase: str) -> None:
        now = time.time()
        rec = {"tag": str(tag), "value": float(value), "step": int(step), "t": round(now - T0, 3), "phase": phase}
        self._curves.write(json.dumps(rec) + "\n")
        if now - self._flushed > 1.0:  # a killed run still leaves its curves behind
            self._curves.flush()
            self._flushed = now

    def close(self) -> None:
        self._curves.flush()
        self._events.flush()


def load_module(name: str, path: Path):
    if not path.is_file():
        raise HarnessFailure(name, f"{name}.py is missing from the pipeline folder.")
    spec = importlib.util.spec_from_file_location(f"pipeline_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        raise HarnessFailure(name, f"{name}.py does not compile: {err.msg} at line {err.lineno}: {(err.text or '').strip()}") from err
    return module


def missing_module_hint(exc: ModuleNotFoundError) -> str:
    """What to say after "No module named X": which packages do exist here, and that no other can be added.

    find_spec only looks a name up on sys.path (it imports nothing), so this costs milliseconds.
    """
    available = [name for name in MAIN_PACKAGES if _findable(name)]
    wanted = exc.name or ""
    top = wanted.split(".")[0]
    inside = (f" {top} itself is installed, but has no module {wanted}: check that name against the installed "
              f"version." if top in available and wanted != top else "")
    can = f"{', '.join(available)} and the Python standard library" if available else "only the Python standard library"
    return (f".{inside} Generated code can import {can}. There is no network access, so no other package can be "
            f"installed: rewrite the code to use these.")


def _findable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def require_function(module, module_name: str, func_name: str, nparams: int):
    func = getattr(module, func_name, None)
    if func is None or not callable(func):
        raise HarnessFailure(module_name, f"{module_name}.py must define a function {func_name}() (see interfaces/{module_name}.py); it defines none.")
    try:
        params = [p for p in inspect.signature(func).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = [p for p in params if p.default is p.empty]
        has_varargs = any(p.kind == p.VAR_POSITIONAL for p in inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return func
    if len(required) > nparams or (len(params) < nparams and not has_varargs):
        got = ", ".join(str(p) for p in inspect.signature(func).parameters.values())
        raise HarnessFailure(module_name, f"{module_name}.py: {func_name}({got}) has the wrong signature; the contract calls it with {nparams} positional argument(s) (see interfaces/{module_name}.py).")
    return func


class TrainData:
    """The training split as train.py sees it (see interfaces/train.py)."""

    def __init__(self, torch, images, labels, train_tf, eval_tf, mix, info, num_workers: int):
        self._torch = torch
        self._images, self._labels = images, labels
        self._train_tf, self._eval_tf, self._mix = train_tf, eval_tf, mix
        self.info = info
        self.num_train = int(len(labels))
        self._num_workers = num_workers

    def _dataset(self, transform):
        torch = self._torch
        images, labels = self._images, self._labels

        class _Split(torch.utils.data.Dataset):
            def __len__(self):
                return len(labels)

            def __getitem__(self, i):
                return transform(images[i]), int(labels[i])

        return _Split()

    def loader(self, batch_size: int, shuffle: bool = True, drop_last: bool = True):
        torch = self._torch
        batch_size = max(1, int(batch_size))
        # Never let drop_last make an epoch empty (tiny preflight subsets).
        drop_last = bool(drop_last) and self.num_train >= batch_size
        dl = torch.utils.data.DataLoader(
            self._dataset(self._train_tf), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
            num_workers=self._num_workers, persistent_workers=False,
        )
        if self._mix is None:
            return dl
        mix, info = self._mix, self.info

        class _Mixed:
            def __len__(self):
                return len(dl)

            def __iter__(self):
                for x, y in dl:
                    yield mix(x, y, info)

        return _Mixed()

    def eval_loader(self, batch_size: int = 256):
        return self._torch.utils.data.DataLoader(self._dataset(self._eval_tf), batch_size=max(1, int(batch_size)), shuffle=False)


class Context:
    """Resources and limits handed to train() (see interfaces/train.py)."""

    def __init__(self, torch, device, seed, time_budget, recorder, phase, max_steps=None):
        self._torch = torch
        self.device = device
        self.seed = seed
        self.time_budget = float(time_budget)
        self.preflight = phase == "preflight"
        self._start = time.monotonic()
        self.deadline = self._start + self.time_budget
        self._rec = recorder
        self._phase = phase
        self._max_steps = max_steps
        self._calls = 0
        self.first_batch_at = None
        self.checkpoint_state = None

    def time_left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def progress(self) -> float:
        frac = (time.monotonic() - self._start) / max(self.time_budget, 1e-9)
        if self._max_steps:
            frac = max(frac, self._calls / self._max_steps)
        return min(1.0, max(0.0, frac))

    def should_stop(self) -> bool:
        if self._calls == 0:
            self.first_batch_at = time.time()
            self._rec.event(f"{self._phase}_first_batch")
        self._calls += 1
        if self._max_steps is not None and self._calls > self._max_steps:
            return True
        return time.monotonic() >= self.deadline

    def log(self, tag, value, step) -> None:
        try:
            value = float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError):
            return
        self._rec.curve(tag, value, step, self._phase)

    def checkpoint(self, model) -> None:
        self.checkpoint_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def predict(torch, model, images, eval_tf, device, batch_size=256):
    model.eval()
    outs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = torch.stack([eval_tf(img) for img in images[start:start + batch_size]]).to(device)
            logits = model(batch)
            if isinstance(logits, (tuple, list)):
                logits = logits[0]
            outs.append(torch.softmax(logits.float(), dim=1).cpu())
    if not outs:
        return torch.zeros((0, 0)).numpy()
    return torch.cat(outs).numpy()


def check_contract(torch, mods, info, sample_images):
    """Validate the three modules on a tiny batch; raise HarnessFailure with the fix."""
    build_transforms = require_function(mods["data"], "data", "build_transforms", 1)
    build_model = require_function(mods["model"], "model", "build_model", 1)
    require_function(mods["train"], "train", "train", 3)
    mix = getattr(mods["data"], "mix_batch", None)
    if mix is not None:
        mix = require_function(mods["data"], "data", "mix_batch", 3)

    tfs = build_transforms(info)
    if not isinstance(tfs, (tuple, list)) or len(tfs) != 2 or not all(callable(t) for t in tfs):
        raise HarnessFailure("data", f"data.py: build_transforms(info) must return a pair (train_transform, eval_transform) of callables; it returned {type(tfs).__name__}.")
    train_tf, eval_tf = tfs
    shapes = set()
    for name, tf in (("train_transform", train_tf), ("eval_transform", eval_tf)):
        for img in sample_images:
            out = tf(img)
            if not isinstance(out, torch.Tensor) or out.dim() != 3 or not out.is_floating_point():
                desc = f"{type(out).__name__}" + (f" {tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else "")
                raise HarnessFailure("data", f"data.py: {name} must map a uint8 array (H, W, C) to a float tensor (C, H2, W2); it returned {desc}.")
            shapes.add(tuple(out.shape))
    if len(shapes) != 1:
        raise HarnessFailure("data", f"data.py: train and eval transforms must give every image the same shape; got {sorted(shapes)}.")

    model = build_model(info)
    if not isinstance(model, torch.nn.Module):
        raise HarnessFailure("model", f"model.py: build_model(info) must return a torch.nn.Module; it returned {type(model).__name__}.")
    batch = torch.stack([eval_tf(img) for img in sample_images[:2]])
    model.eval()
    with torch.no_grad():
        out = model(batch)
    if isinstance(out, (tuple, list)):
        out = out[0]
    want = (batch.shape[0], info.num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise HarnessFailure("model", f"model.py: for an input batch of shape {tuple(batch.shape)} the model returned {got}, but the contract needs {want} = (batch, info.num_classes). Make the classifier output info.num_classes logits and accept {tuple(batch.shape[1:])} inputs from data.py.")
    if not torch.isfinite(out).all():
        raise HarnessFailure("model", f"model.py: the untrained model produced NaN or inf logits on a batch of shape {tuple(batch.shape)}; check the initialisation and normalisation layers.")
    if mix is not None:
        mx, my = mix(batch, torch.zeros(batch.shape[0], dtype=torch.long), info)
        if not isinstance(mx, torch.Tensor) or tuple(mx.shape) != tuple(batch.shape):
            raise HarnessFailure("data", f"data.py: mix_batch must return images of the shape it was given {tuple(batch.shape)}.")
        if not isinstance(my, torch.Tensor) or (tuple(my.shape) not in ((batch.shape[0],), (batch.shape[0], info.num_classes))):
            raise HarnessFailure("data", f"data.py: mix_batch must return targets of shape (B,) or (B, num_classes); got {getattr(my, 'shape', type(my).__name__)}.")
    return train_tf, eval_tf, mix


def _overran(signum, frame):
    raise TrainingOverran()


def blame(exc: BaseException, default: str) -> str:
    """The pipeline module whose code raised, judged by the deepest frame in one of them."""
    if isinstance(exc, HarnessFailure):
        return exc.module
    owner = default
    for frame in traceback.extract_tb(exc.__traceback__):
        stem = Path(frame.filename).stem
        if stem in MODULES and Path(frame.filename).parent.name != "interfaces":
            owner = stem
    return owner


def seed_all(torch, np, seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _load_pipeline(torch, np, spec: dict, rec: Recorder, sample_images) -> tuple:
    """Import the three modules and check them on a few images (phases import, contract)."""
    pipeline = Path(spec["pipeline_dir"])
    info = SimpleNamespace(**spec["info"])
    info.image_size = tuple(info.image_size)
    sys.path.insert(0, str(pipeline))
    mods = {name: load_module(name, pipeline / f"{name}.py") for name in MODULES}
    rec.phase = "contract"
    seed_all(torch, np, int(spec.get("seed", 0)))
    train_tf, eval_tf, mix = check_contract(torch, mods, info, sample_images)
    rec.event("contract_ok")
    return mods, info, train_tf, eval_tf, mix


def run_train(spec: dict, rec: Recorder, torch, np) -> dict:
    """Mode "train": contract check, preflight, training; saves model.pt. Predicts nothing:
    the parent ends this process when its time is up and predicts in a separate one."""
    device = torch.device(spec.get("device", "cpu"))
    data_dir = Path(spec["data_dir"])
    out_dir = Path(spec["out_dir"])
    seed = int(spec.get("seed", 0))
    train_x = np.load(data_dir / "train_x.npy", mmap_mode="r")
    train_y = np.load(data_dir / "train_y.npy")
    rec.event("data_ready")
    report: dict = {"interrupted": False, "used_checkpoint": False}
    rec.phase = "import"
    sample = [np.asarray(train_x[i]) for i in range(min(3, len(train_x)))]
    mods, info, train_tf, eval_tf, mix = _load_pipeline(torch, np, spec, rec, sample)

    pf = spec.get("preflight", {})
    if pf.get("enabled", True):
        rec.phase = "preflight"
        idx = np.linspace(0, len(train_y) - 1, num=min(int(pf.get("subset", 64)), len(train_y))).astype(int)
        sub = TrainData(torch, np.asarray(train_x[idx]), train_y[idx], train_tf, eval_tf, mix, info, 0)
        # time_budget counts from this script's start (imports included), like the parent's limit.
        budget = max(1.0, T0 + float(pf.get("time_budget", 20)) - time.time())
        steps = int(pf.get("max_steps", 3))
        ctx = Context(torch, device, seed, budget, rec, "preflight", max_steps=steps)
        model = mods["model"].build_model(info).to(device)
        # A train() that ignores should_stop() is stopped here with a traceback
        # showing where it was, instead of being killed blind by the parent.
        signal.signal(signal.SIGALRM, _overran)
        signal.setitimer(signal.ITIMER_REAL, budget)
        try:
            model = mods["train"].train(model, sub, ctx)
        except TrainingOverran as exc:
            raise HarnessFailure("train", f"train.py: the preflight ({steps} batches on {len(idx)} images) did not return within {budget:.0f} s. "
                                          "train() must call ctx.should_stop() at every batch and return as soon as it is True; the traceback shows where it was.") from exc
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if not isinstance(model, torch.nn.Module):
            raise HarnessFailure("train", f"train.py: train(model, data, ctx) must return the trained torch.nn.Module; it returned {type(model).__name__}.")
        probs = predict(torch, model, np.asarray(train_x[idx[:8]]), eval_tf, device)
        if probs.shape != (len(idx[:8]), info.num_classes) or not np.isfinite(probs).all():
            raise HarnessFailure("train", f"train.py: after the preflight the model's predictions have shape {probs.shape} or contain NaN; expected ({len(idx[:8])}, {info.num_classes}) finite values.")
        rec.event("preflight_ok")

    rec.phase = "train"
    seed_all(torch, np, seed)
    workers = int(spec.get("loader_workers", 0))
    data = TrainData(torch, train_x, train_y, train_tf, eval_tf, mix, info, workers)
    rec.event("train_start")
    ctx = Context(torch, device, seed, spec["time_budget"], rec, "train")
    model = mods["model"].build_model(info).to(device)
    trained = None
    # Code that ignores should_stop() is interrupted a little after its
    # deadline and saved from its last checkpoint (or current weights).
    grace = float(spec.get("interrupt_grace", 5.0 + 0.1 * float(spec["time_budget"])))
    signal.signal(signal.SIGALRM, _overran)
    signal.setitimer(signal.ITIMER_REAL, float(spec["time_budget"]) + grace)
    try:
        trained = mods["train"].train(model, data, ctx)
    except TrainingOverran:
        report["interrupted"] = True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if report["interrupted"] or trained is None:
        if ctx.checkpoint_state is not None:
            model.load_state_dict(ctx.checkpoint_state)
            report["used_checkpoint"] = True
        trained = model
    if not isinstance(trained, torch.nn.Module):
        raise HarnessFailure("train", f"train.py: train(model, data, ctx) must return the trained torch.nn.Module; it returned {type(trained).__name__}.")
    rec.event("train_done", first_batch_wall=ctx.first_batch_at)
    rec.phase = "save"
    torch.save({k: v.detach().cpu() for k, v in trained.state_dict().items()}, out_dir / "model.pt")
    rec.event("saved")
    return report


def run_predict(spec: dict, rec: Recorder, torch, np) -> dict:
    """Mode "predict": load model.pt and write probs_<set>.npy for each set. Sees images only."""
    device = torch.device(spec.get("device", "cpu"))
    data_dir = Path(spec["data_dir"])
    out_dir = Path(spec["out_dir"])
    sets = {name: np.load(data_dir / f"{name}_x.npy", mmap_mode="r") for name in spec.get("predict_sets", [])}
    # The contract is checked on training-like images where the caller gives some.
    contract = spec.get("contract_set")
    first = np.load(data_dir / f"{contract}_x.npy", mmap_mode="r") if contract else next(iter(sets.values()), None)
    rec.event("data_ready")
    rec.phase = "import"
    sample = [np.asarray(first[i]) for i in range(min(3, len(first)))] if first is not None else []
    mods, info, _, eval_tf, _ = _load_pipeline(torch, np, spec, rec, sample)
    rec.phase = "predict"
    model = mods["model"].build_model(info).to(device)
    model.load_state_dict(torch.load(spec["weights"], map_location=device, weights_only=True))
    for name, images in sets.items():
        np.save(out_dir / f"probs_{name}.npy", predict(torch, model, images, eval_tf, device).astype(np.float32))
    rec.event("predict_done")
    return {}


def run(spec: dict, rec: Recorder) -> dict:
    import numpy as np
    import torch

    rec.event("imports_done")
    torch.set_num_threads(max(1, int(spec.get("threads", 1))))
    rec.phase = "data"
    try:
        return (run_predict if spec["mode"] == "predict" else run_train)(spec, rec, torch, np)
    except BaseException as exc:  # noqa: BLE001 - everything is reported, then re-raised as exit code
        if isinstance(exc, KeyboardInterrupt):
            raise
        phase = rec.phase
        default = {"data": None, "import": "data", "contract": "model", "preflight": "train", "train": "train",
                   "save": "train", "predict": "model"}[phase]
        err = {
            "phase": phase,
            "module": blame(exc, default),
            "type": type(exc).__name__,
            "message": str(exc)[:2000] + (missing_module_hint(exc) if isinstance(exc, ModuleNotFoundError) else ""),
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-6000:],
        }
        (Path(spec["out_dir"]) / "error.json").write_text(json.dumps(err, indent=2), encoding="utf-8")
        rec.event("failed", stage=phase)
        raise SystemExit(EXIT_CONTRACT if phase in ("import", "contract") else EXIT_ERROR)


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    out_dir = Path(spec["out_dir"])
    rec = Recorder(out_dir)
    rec.event("start", t0=T0)
    try:
        report = run(spec, rec)
    finally:
        rec.close()
    (out_dir / "child.json").write_text(json.dumps(report), encoding="utf-8")
    rec.event("done")
    rec.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    try:
        code = main(sys.argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter shutdown (~1 s with torch loaded) and any non-daemon
    # thread the generated code left running: everything is already on disk.
    os._exit(code)
