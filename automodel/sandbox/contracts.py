"""Static contract checks done in the trusted parent before anything is launched.

They only parse the generated sources (never import them), so a syntax error or
a missing/misshapen function costs milliseconds instead of a sandbox start and
`import torch`. The dynamic half (shapes, dtypes, the model's output) runs in
the sandbox child (sandbox_child.check_contract).

Each problem is a `ContractIssue` whose `message` names the module, what is
wrong and how to fix it; that text goes verbatim to the engineer who repairs it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from automodel.core import MODULES


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    nargs: int            # positional arguments the harness passes
    required: bool        # False: optional hook, checked only when defined
    call: str             # how the harness calls it, quoted in messages
    instead: str | None = None  # another function that may stand in for this required one


# What the harness calls in each module (see interfaces/*.py). data.py defines the
# batched transforms (preferred) or the per-image ones.
REQUIRED: dict[str, tuple[FunctionSpec, ...]] = {
    "data": (
        FunctionSpec("build_transforms", 1, True, "build_transforms(info)", instead="build_batch_transforms"),
        FunctionSpec("build_batch_transforms", 1, False, "build_batch_transforms(info)"),
        FunctionSpec("mix_batch", 3, False, "mix_batch(images, targets, info)"),
    ),
    "model": (FunctionSpec("build_model", 1, True, "build_model(info)"),),
    "train": (FunctionSpec("train", 3, True, "train(model, data, ctx)"),),
}


@dataclass(frozen=True)
class ContractIssue:
    module: str                 # "data" | "model" | "train"
    kind: str                   # "missing_file" | "syntax" | "missing_function" | "signature"
    message: str                # one paragraph: file, what is wrong, the fix
    line: int | None = None
    text: str | None = None     # the offending source line, when there is one

    def as_dict(self) -> dict:
        return {"module": self.module, "kind": self.kind, "message": self.message, "line": self.line, "text": self.text}


def _arity_problem(node: ast.FunctionDef | ast.AsyncFunctionDef, spec: FunctionSpec) -> str | None:
    args = node.args
    positional = list(args.posonlyargs) + list(args.args)
    n_defaults = len(args.defaults)
    n_required = len(positional) - n_defaults
    required_kwonly = [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is None]
    if n_required > spec.nargs:
        return f"requires {n_required} positional arguments but the harness passes {spec.nargs}"
    if len(positional) < spec.nargs and args.vararg is None:
        return f"accepts only {len(positional)} positional argument(s) but the harness passes {spec.nargs}"
    if required_kwonly:
        return f"has required keyword-only argument(s) {', '.join(required_kwonly)} that the harness never passes"
    return None


def _top_level_names(tree: ast.Module) -> dict[str, ast.AST]:
    """Names bound at module top level (last binding wins, like at run time)."""
    names: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    names[target.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names[(alias.asname or alias.name).split(".")[0]] = node
    return names


def check_source(module: str, source: str, filename: str | None = None) -> list[ContractIssue]:
    """Problems in one module's source; [] when it parses and defines what the harness calls."""
    filename = filename or f"{module}.py"
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as err:
        text = (err.text or "").rstrip("\n").strip() or None
        where = f"line {err.lineno}" + (f", column {err.offset}" if err.offset else "")
        shown = f": {text}" if text else ""
        return [
            ContractIssue(
                module,
                "syntax",
                f"{filename} does not parse: {err.msg} at {where}{shown}. Fix the syntax on that line; the module "
                "must be valid Python 3.",
                err.lineno,
                text,
            )
        ]
    except ValueError as err:  # e.g. source with NUL bytes
        return [
            ContractIssue(
                module, "syntax", f"{filename} cannot be parsed: {err}. Rewrite it as plain Python 3 source text."
            )
        ]

    issues: list[ContractIssue] = []
    names = _top_level_names(tree)
    for spec in REQUIRED.get(module, ()):
        node = names.get(spec.name)
        if node is None:
            if spec.instead and spec.instead in names:
                continue
            if spec.instead:
                issues.append(
                    ContractIssue(
                        module,
                        "missing_function",
                        f"{filename} must define `def {spec.instead}(info):` (batched transforms on the device, "
                        f"preferred) or `def {spec.call}:` (per image, for albumentations on large photos) at the top "
                        f"level of the module (see interfaces/{module}.py); neither was found.",
                    )
                )
            elif spec.required:
                issues.append(
                    ContractIssue(
                        module,
                        "missing_function",
                        f"{filename} must define `def {spec.call}:` at the top level of the module (see "
                        f"interfaces/{module}.py); no top-level `{spec.name}` was found. Add it, not nested inside "
                        "a class or another function.",
                    )
                )
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if isinstance(node, ast.AsyncFunctionDef):
                issues.append(
                    ContractIssue(
                        module,
                        "signature",
                        f"{filename}: `{spec.name}` is `async def` at line {node.lineno}; the harness calls it as a "
                        f"plain function {spec.call}. Make it a normal `def`.",
                        node.lineno,
                    )
                )
                continue
            problem = _arity_problem(node, spec)
            if problem:
                got = ast.unparse(node.args)
                issues.append(
                    ContractIssue(
                        module,
                        "signature",
                        f"{filename}: `def {spec.name}({got})` at line {node.lineno} {problem}. Change it to `def "
                        f"{spec.call}:` (see interfaces/{module}.py).",
                        node.lineno,
                        f"def {spec.name}({got}):",
                    )
                )
        elif isinstance(node, ast.ClassDef):
            issues.append(
                ContractIssue(
                    module,
                    "signature",
                    f"{filename}: `{spec.name}` is a class (line {node.lineno}), but the harness calls the function "
                    f"{spec.call}. Define `def {spec.call}:` at the top level.",
                    node.lineno,
                )
            )
        # Assigned or imported names can only be checked at run time (in the sandbox).
    return issues


def check_pipeline_dir(pipeline_dir: Path) -> list[ContractIssue]:
    """Static problems of data.py, model.py and train.py in `pipeline_dir`."""
    issues: list[ContractIssue] = []
    for module in MODULES:
        path = Path(pipeline_dir) / f"{module}.py"
        if not path.is_file():
            issues.append(
                ContractIssue(
                    module,
                    "missing_file",
                    f"{path} is missing: a pipeline needs data.py, model.py and train.py side by side (see "
                    f"interfaces/{module}.py).",
                )
            )
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            issues.append(
                ContractIssue(
                    module, "syntax", f"{path} is not UTF-8 text ({err.reason} at byte {err.start}). Save it as UTF-8."
                )
            )
            continue
        issues.extend(check_source(module, source, filename=f"{module}.py"))
    return issues


def check_sources(sources: dict[str, str]) -> list[ContractIssue]:
    """Static problems of a pipeline given as {module: source} (before it is written anywhere)."""
    issues: list[ContractIssue] = []
    for module in MODULES:
        if module not in sources:
            issues.append(
                ContractIssue(module, "missing_file", f"the pipeline has no {module}.py (see interfaces/{module}.py).")
            )
            continue
        issues.extend(check_source(module, sources[module]))
    return issues
