"""Checks of the generated modules inside the sandbox: import them, and check each
contract on a tiny batch, raising HarnessFailure with the module to blame and the fix.

Stand-alone like child.py (no automodel imports), mounted beside it in the sandbox.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

MODULES = ("data", "model", "train")
# The packages generated code is told it may use (templates/prompts/_rules.j2), by import name.
MAIN_PACKAGES = ("torch", "torchvision", "timm", "numpy", "albumentations", "PIL")


class HarnessFailure(Exception):
    """A failure the harness diagnosed itself, with the module to blame."""

    def __init__(self, module: str, message: str):
        super().__init__(message)
        self.module = module


def load_module(name: str, path: Path):
    if not path.is_file():
        raise HarnessFailure(name, f"{name}.py is missing from the pipeline folder.")
    spec = importlib.util.spec_from_file_location(f"pipeline_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        raise HarnessFailure(
            name, f"{name}.py does not compile: {err.msg} at line {err.lineno}: {(err.text or '').strip()}"
        ) from err
    return module


def missing_module_hint(exc: ModuleNotFoundError) -> str:
    """What to say after "No module named X": which packages do exist here, and that no other can be added.

    find_spec only looks a name up on sys.path (it imports nothing), so this costs milliseconds.
    """
    available = [name for name in MAIN_PACKAGES if _findable(name)]
    wanted = exc.name or ""
    top = wanted.split(".")[0]
    inside = (
        f" {top} itself is installed, but has no module {wanted}: check that name against the installed version."
        if top in available and wanted != top
        else ""
    )
    can = f"{', '.join(available)} and the Python standard library" if available else "only the Python standard library"
    return (
        f".{inside} Generated code can import {can}. There is no network access, so no other package can be "
        f"installed: rewrite the code to use these."
    )


def _findable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def require_function(module, module_name: str, func_name: str, nparams: int):
    func = getattr(module, func_name, None)
    if func is None or not callable(func):
        raise HarnessFailure(
            module_name,
            f"{module_name}.py must define a function {func_name}() (see interfaces/{module_name}.py); it defines "
            "none.",
        )
    try:
        params = [
            p
            for p in inspect.signature(func).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        required = [p for p in params if p.default is p.empty]
        has_varargs = any(p.kind == p.VAR_POSITIONAL for p in inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return func
    if len(required) > nparams or (len(params) < nparams and not has_varargs):
        got = ", ".join(str(p) for p in inspect.signature(func).parameters.values())
        raise HarnessFailure(
            module_name,
            f"{module_name}.py: {func_name}({got}) has the wrong signature; the contract calls it with {nparams} "
            f"positional argument(s) (see interfaces/{module_name}.py).",
        )
    return func


def _describe(out, torch) -> str:
    return type(out).__name__ + (f" {tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else "")


def _pair(tfs, call: str):
    if not isinstance(tfs, (tuple, list)) or len(tfs) != 2 or not all(callable(t) for t in tfs):
        raise HarnessFailure("data", f"data.py: {call} must return a pair (train, eval) of callables; it returned "
                                     f"{type(tfs).__name__}.")
    return tfs


def check_batch_transforms(torch, build, info, batch):
    """The batched transforms on a uint8 (B, C, H, W) batch: float (B, C2, H2, W2), same shape, same device."""
    train_tf, eval_tf = _pair(build(info), "build_batch_transforms(info)")
    shapes = set()
    for name, tf in (("train_batch_transform", train_tf), ("eval_batch_transform", eval_tf)):
        out = tf(batch.clone())
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or not out.is_floating_point() \
                or out.shape[0] != batch.shape[0]:
            raise HarnessFailure(
                "data",
                f"data.py: {name} must map a uint8 tensor (B, C, H, W) = {tuple(batch.shape)} to a float tensor "
                f"(B, C2, H2, W2) with the same B; it returned {_describe(out, torch)}. Convert with x.float() and "
                "keep the batch dimension first.",
            )
        if out.device != batch.device:
            raise HarnessFailure(
                "data",
                f"data.py: {name} must return the batch on the device it received it on ({batch.device}); it returned "
                f"one on {out.device}. Create constants (mean, std, masks) on x.device.",
            )
        shapes.add(tuple(out.shape[1:]))
    if len(shapes) != 1:
        raise HarnessFailure(
            "data", f"data.py: train and eval batch transforms must give images of one shape; got {sorted(shapes)}."
        )
    return train_tf, eval_tf


def check_image_transforms(torch, build, info, sample_images):
    """The per-image transforms on a few uint8 (H, W, C) arrays: float (C, H2, W2), one shape for all."""
    train_tf, eval_tf = _pair(build(info), "build_transforms(info)")
    shapes = set()
    for name, tf in (("train_transform", train_tf), ("eval_transform", eval_tf)):
        for img in sample_images:
            out = tf(img)
            if not isinstance(out, torch.Tensor) or out.dim() != 3 or not out.is_floating_point():
                raise HarnessFailure(
                    "data",
                    f"data.py: {name} must map a uint8 array (H, W, C) to a float tensor (C, H2, W2); it returned "
                    f"{_describe(out, torch)}.",
                )
            shapes.add(tuple(out.shape))
    if len(shapes) != 1:
        raise HarnessFailure(
            "data", f"data.py: train and eval transforms must give every image the same shape; got {sorted(shapes)}."
        )
    return train_tf, eval_tf


def check_contract(torch, np, mods, info, sample_images, device="cpu"):
    """Validate the three modules on a tiny batch; return (Transforms, mix_batch); raise HarnessFailure with the fix."""
    from child_data import Transforms

    data = mods["data"]
    build_model = require_function(mods["model"], "model", "build_model", 1)
    require_function(mods["train"], "train", "train", 3)
    mix = getattr(data, "mix_batch", None)
    if mix is not None:
        mix = require_function(data, "data", "mix_batch", 3)
    uint8 = torch.from_numpy(np.ascontiguousarray(np.stack(sample_images))).to(device).permute(0, 3, 1, 2)
    if getattr(data, "build_batch_transforms", None) is not None:
        build = require_function(data, "data", "build_batch_transforms", 1)
        transforms = Transforms(*check_batch_transforms(torch, build, info, uint8), batched=True)
    else:
        build = require_function(data, "data", "build_transforms", 1)
        transforms = Transforms(*check_image_transforms(torch, build, info, sample_images), batched=False)

    model = build_model(info)
    if not isinstance(model, torch.nn.Module):
        raise HarnessFailure(
            "model", f"model.py: build_model(info) must return a torch.nn.Module; it returned {type(model).__name__}."
        )
    batch = transforms.eval_batch(torch, np, np.stack(sample_images[:2]), device)
    model = model.to(device)
    model.eval()
    with torch.no_grad():
        out = model(batch)
    if isinstance(out, (tuple, list)):
        out = out[0]
    want = (batch.shape[0], info.num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise HarnessFailure(
            "model",
            f"model.py: for an input batch of shape {tuple(batch.shape)} the model returned {got}, but the contract "
            f"needs {want} = (batch, info.num_classes). Make the classifier output info.num_classes logits and "
            f"accept {tuple(batch.shape[1:])} inputs from data.py.",
        )
    if not torch.isfinite(out).all():
        raise HarnessFailure(
            "model",
            f"model.py: the untrained model produced NaN or inf logits on a batch of shape {tuple(batch.shape)}; "
            "check the initialisation and normalisation layers.",
        )
    if mix is not None:
        mx, my = mix(batch, torch.zeros(batch.shape[0], dtype=torch.long, device=batch.device), info)
        if not isinstance(mx, torch.Tensor) or tuple(mx.shape) != tuple(batch.shape):
            raise HarnessFailure(
                "data", f"data.py: mix_batch must return images of the shape it was given {tuple(batch.shape)}."
            )
        if not isinstance(my, torch.Tensor) or (
            tuple(my.shape) not in ((batch.shape[0],), (batch.shape[0], info.num_classes))
        ):
            raise HarnessFailure(
                "data",
                "data.py: mix_batch must return targets of shape (B,) or (B, num_classes); got "
                f"{getattr(my, 'shape', type(my).__name__)}.",
            )
    return transforms, mix
