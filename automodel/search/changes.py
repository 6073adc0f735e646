"""A short name for what an edit changed, read from the code itself (not from what was asked for).

The Analyst reads many tried changes; naming each by its instruction is long
and says what was asked, not what was done. The name here compares the
module before and after: the hyperparameters changed (`model: WIDTH 24 -> 32`)
or, for a rewrite, how many lines changed outside the hyperparameter block.
"""

from __future__ import annotations

import difflib

from automodel.hparams import hparam_lines, read_hparams

LABEL_CHARS = 120


def _body_lines(source: str) -> list[str]:
    """The module's non-blank lines without its hyperparameter constants (those are compared by value)."""
    skip = hparam_lines(source)
    return [line for i, line in enumerate(source.splitlines()) if i not in skip and line.strip()]


def _value(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:23] + "…"


def change_label(target: str, before: str | None, after: str | None, instruction: str = "") -> str:
    """`target: NAME old -> new, ...`, or `target: rewrite +A/-R lines (...)`; the instruction's start
    when there is no code to compare (the edit failed before it was written)."""
    if before is None or after is None:
        words = " ".join(instruction.split())
        return f"{target}: {words}"[:LABEL_CHARS]
    old, new = read_hparams(before), read_hparams(after)
    changed = []
    for name in [*old, *(n for n in new if n not in old)]:
        if name not in new:
            changed.append(f"{name} removed")
        elif name not in old:
            changed.append(f"{name} = {_value(new[name])} (new)")
        elif old[name] != new[name]:
            changed.append(f"{name} {_value(old[name])} -> {_value(new[name])}")
    diff = [d for d in difflib.unified_diff(_body_lines(before), _body_lines(after), lineterm="", n=0)
            if d[:1] in "+-" and not d.startswith(("+++", "---"))]
    if diff:
        added = sum(1 for d in diff if d.startswith("+"))
        label = f"{target}: rewrite +{added}/-{len(diff) - added} lines"
        label += f"; {', '.join(changed)}" if changed else ""
    else:
        label = f"{target}: " + (", ".join(changed) if changed else "no change to the code")
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"
