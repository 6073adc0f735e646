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
# What train.py is handed lives next to this script (mounted beside it in the sandbox).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from child_checks import MODULES, HarnessFailure, check_contract, load_module, missing_module_hint  # noqa: E402
from child_data import Context, TrainData, Transforms, predict  # noqa: E402, F401 - Transforms: for export_child and tests

EXIT_CONTRACT = 3
EXIT_ERROR = 4


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


def _load_pipeline(torch, np, spec: dict, rec: Recorder, sample_images, device) -> tuple:
    """Import the three modules and check them on a few images (phases import, contract)."""
    pipeline = Path(spec["pipeline_dir"])
    info = SimpleNamespace(**spec["info"])
    info.image_size = tuple(info.image_size)
    sys.path.insert(0, str(pipeline))
    mods = {name: load_module(name, pipeline / f"{name}.py") for name in MODULES}
    rec.phase = "contract"
    seed_all(torch, np, int(spec.get("seed", 0)))
    transforms, mix = check_contract(torch, np, mods, info, sample_images, device)
    rec.event("contract_ok", batched=transforms.batched)
    return mods, info, transforms, mix


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
    mods, info, transforms, mix = _load_pipeline(torch, np, spec, rec, sample, device)

    pf = spec.get("preflight", {})
    if pf.get("enabled", True):
        rec.phase = "preflight"
        idx = np.linspace(0, len(train_y) - 1, num=min(int(pf.get("subset", 64)), len(train_y))).astype(int)
        sub = TrainData(torch, np.asarray(train_x[idx]), train_y[idx], transforms, mix, info, 0, device)
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
            raise HarnessFailure(
                "train",
                f"train.py: the preflight ({steps} batches on {len(idx)} images) did not return within {budget:.0f} s. "
                "train() must call ctx.should_stop() at every batch and return as soon as it is True; the traceback "
                "shows where it was.",
            ) from exc
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if not isinstance(model, torch.nn.Module):
            raise HarnessFailure(
                "train",
                "train.py: train(model, data, ctx) must return the trained torch.nn.Module; it returned "
                f"{type(model).__name__}.",
            )
        probs = predict(torch, np, model, np.asarray(train_x[idx[:8]]), transforms, device)
        if probs.shape != (len(idx[:8]), info.num_classes) or not np.isfinite(probs).all():
            raise HarnessFailure(
                "train",
                f"train.py: after the preflight the model's predictions have shape {probs.shape} or contain NaN; "
                f"expected ({len(idx[:8])}, {info.num_classes}) finite values.",
            )
        rec.event("preflight_ok")

    rec.phase = "train"
    seed_all(torch, np, seed)
    workers = int(spec.get("loader_workers", 0))
    data = TrainData(torch, train_x, train_y, transforms, mix, info, workers, device)
    rec.event("train_start")
    started = time.time()
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
        raise HarnessFailure(
            "train",
            "train.py: train(model, data, ctx) must return the trained torch.nn.Module; it returned "
            f"{type(trained).__name__}.",
        )
    # What training consumed, as this process counted it (the parent measures time and CPU itself).
    report.update(steps=ctx.steps, images=data.images_served, batches=data.batches_served,
                  epochs=round(data.images_served / max(1, data.num_train), 3), batched=transforms.batched,
                  seconds=round(time.time() - started, 3))
    rec.event("train_done", first_batch_wall=ctx.first_batch_at, steps=ctx.steps, images=data.images_served)
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
    mods, info, transforms, _ = _load_pipeline(torch, np, spec, rec, sample, device)
    rec.phase = "predict"
    model = mods["model"].build_model(info).to(device)
    model.load_state_dict(torch.load(spec["weights"], map_location=device, weights_only=True))
    for name, images in sets.items():
        probs = predict(torch, np, model, images, transforms, device, batch_size=int(spec.get("batch_size", 256)))
        np.save(out_dir / f"probs_{name}.npy", probs.astype(np.float32))
    rec.event("predict_done")
    return {}


def run_probe(spec: dict, rec: Recorder, torch, np) -> dict:
    """Mode "probe": training throughput of a reference network on the training images (child_probe.py)."""
    import child_probe

    data_dir = Path(spec["data_dir"])
    images = np.load(data_dir / "train_x.npy", mmap_mode="r")
    labels = np.load(data_dir / "train_y.npy")
    rec.event("data_ready")
    rec.phase = "probe"
    device = torch.device(spec.get("device", "cpu"))
    result = child_probe.measure(torch, np, images, labels, spec.get("probe", {}), device)
    (Path(spec["out_dir"]) / "probe.json").write_text(json.dumps(result), encoding="utf-8")
    return {}


MODES = {"train": run_train, "predict": run_predict, "probe": run_probe}


def run(spec: dict, rec: Recorder) -> dict:
    import numpy as np
    import torch

    rec.event("imports_done")
    torch.set_num_threads(max(1, int(spec.get("threads", 1))))
    rec.phase = "data"
    try:
        return MODES[spec["mode"]](spec, rec, torch, np)
    except BaseException as exc:  # noqa: BLE001 - everything is reported, then re-raised as exit code
        if isinstance(exc, KeyboardInterrupt):
            raise
        phase = rec.phase
        default = {
            "data": None,
            "probe": None,
            "import": "data",
            "contract": "model",
            "preflight": "train",
            "train": "train",
            "save": "train",
            "predict": "model",
        }[phase]
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
