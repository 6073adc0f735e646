"""Read and rewrite the UPPER_CASE hyperparameter block that opens every module.

Every pipeline module starts with top-level constants such as
`LR = 0.05  # peak learning rate`. Reading them gives the Summarizer a faithful
picture of a module, and rewriting only their values (keeping comments and
everything else byte-for-byte) is how the expert engineers make one precise
edit, whoever wrote the module.
"""

from __future__ import annotations

import ast
from typing import Any


class HParamError(ValueError):
    """The source cannot be parsed, or a constant to edit is not there."""


def _constant_nodes(tree: ast.Module) -> dict[str, ast.Assign | ast.AnnAssign]:
    nodes: dict[str, ast.Assign | ast.AnnAssign] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name = node.target.id
        else:
            continue
        if name.isupper() and not name.startswith("_"):
            nodes[name] = node
    return nodes


def read_hparams(source: str) -> dict[str, Any]:
    """The module's top-level UPPER_CASE constants whose values are literals."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    values: dict[str, Any] = {}
    for name, node in _constant_nodes(tree).items():
        try:
            values[name] = ast.literal_eval(node.value)
        except ValueError:
            continue  # computed values are not hyperparameters we can edit
    return values


def hparam_lines(source: str) -> set[int]:
    """The 0-based line numbers of the constants read_hparams reads (to compare the rest of a module)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    values = read_hparams(source)
    return {i for name, node in _constant_nodes(tree).items() if name in values
            for i in range(node.lineno - 1, node.end_lineno or node.lineno)}


def hparam_comments(source: str) -> dict[str, str]:
    """The trailing comment of each constant's line (its unit or meaning)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    lines = source.splitlines()
    comments = {}
    for name, node in _constant_nodes(tree).items():
        line = lines[node.end_lineno - 1]
        if "#" in line:
            comments[name] = line.split("#", 1)[1].strip()
    return comments


def set_hparams(source: str, changes: dict[str, Any]) -> str:
    """Return `source` with the values of the named constants replaced.

    Only the value's characters change, so comments and layout survive and a
    diff of two iterations shows exactly the edit.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise HParamError(f"cannot edit a module that does not parse: {err}") from err
    nodes = _constant_nodes(tree)
    missing = sorted(set(changes) - set(nodes))
    if missing:
        raise HParamError(f"the module has no top-level constant(s) {', '.join(missing)}")
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))

    def pos(lineno: int, col: int) -> int:
        # ast columns are UTF-8 byte offsets; convert within the line.
        line = lines[lineno - 1]
        return offsets[lineno - 1] + len(line.encode("utf-8")[:col].decode("utf-8"))

    spans = []
    for name, value in changes.items():
        v = nodes[name].value
        spans.append((pos(v.lineno, v.col_offset), pos(v.end_lineno, v.end_col_offset), repr(value)))
    out = source
    for start, end, text in sorted(spans, reverse=True):
        out = out[:start] + text + out[end:]
    return out
