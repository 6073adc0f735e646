"""The built-in Summarizer: each module's hyperparameters and methods, and the result.

The summary is what the Analyst reads about a pipeline, so it is short and
structured however long the module is: the UPPER_CASE constants (with their
comments as units) and the names of the functions and classes it defines.
"""

from __future__ import annotations

import ast
from typing import Any

from automodel.core import MODULES, Pipeline
from automodel.hparams import hparam_comments, read_hparams


def _definitions(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]


def _docline(source: str) -> str:
    try:
        doc = ast.get_docstring(ast.parse(source)) or ""
    except SyntaxError:
        return ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def summarize(pipeline: Pipeline, result: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for m in MODULES:
        src = pipeline.module(m)
        summary[m] = {
            "about": _docline(src),
            "hparams": read_hparams(src),
            "units": hparam_comments(src),
            "defines": _definitions(src),
        }
    summary["result"] = {
        k: result.get(k) for k in ("status", "val_accuracy", "train_accuracy", "seconds") if k in result
    }
    return summary
