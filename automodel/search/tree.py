"""The budget search's tree of candidates as text: who grew from whom, at what fidelity, how it scored.

`show` prints it and the report embeds it; both read the rows of `summarize_run`.
"""

from __future__ import annotations

from typing import Any


def _label(row: dict[str, Any], final_members: set[int]) -> str:
    kind = row.get("kind") or "candidate"
    where = f"refit, {row['fidelity']:.0f} s on train+val" if kind == "refit" else (
        f"rung {row.get('rung')}, {row['fidelity']:.0f} s" if row.get("fidelity") is not None else "")
    if row.get("slot"):  # --parallel: "slot 1/2 (1 thread) on host" -> "slot 1/2"
        where += f", {row['slot'].split(' (')[0]}"
    score = (f"test {row['test_accuracy']:.4f}" if kind == "refit" and row.get("test_accuracy") is not None
             else f"val {row['val_accuracy']:.4f}" if row.get("val_accuracy") is not None else row["status"])
    marks = [m for m, on in (("promoted run", kind == "promotion"), ("kept", row.get("accepted")),
                             ("contended", row.get("contended")),
                             ("final model", row["iteration"] in final_members)) if on]
    what = (row.get("instruction") or "")[:60]
    return f"{row['iteration']} [{where}] {score}" + (f" ({', '.join(marks)})" if marks else "") + f"  {what}"


def tree_lines(rows: list[dict[str, Any]], final: dict[str, Any] | None) -> list[str]:
    """One line per attempt, indented under its parent; [] for a greedy run (no tree recorded)."""
    if not any(row.get("kind") for row in rows):
        return []
    final_members = set((final or {}).get("refits") or []) or (
        set((final or {}).get("members") or []) if (final or {}).get("kind") == "iteration" else set())
    children: dict[int | None, list[dict[str, Any]]] = {}
    known = {row["iteration"] for row in rows}
    for row in rows:
        parent = row.get("parent") if row.get("parent") in known else None
        children.setdefault(parent, []).append(row)
    lines: list[str] = []

    def walk(parent: int | None, prefix: str) -> None:
        kids = children.get(parent, [])
        for i, row in enumerate(kids):
            last = i == len(kids) - 1
            branch = "" if parent is None else ("`- " if last else "|- ")
            lines.append(prefix + branch + _label(row, final_members))
            walk(row["iteration"], prefix + ("" if parent is None else ("   " if last else "|  ")))

    walk(None, "")
    return lines


def final_line(final: dict[str, Any]) -> str:
    """One sentence on the final model (show --json "final"), without the full stop."""
    test = final.get("test_accuracy")
    score = f"test accuracy {test:.4f}" if test is not None else "no test score (the dataset has no test split)"
    members = final.get("members") or []
    trained = "trained" if members and members == final.get("refits") else "retrained"  # a one-shot run
    what = {"refit": f"iteration {members[0]} {trained} on train+val" if members else "a refit",
            "ensemble": f"an ensemble of iterations {members}, each retrained on train+val",
            "iteration": f"iteration {members[0]} as it was" if members else "the best iteration"}[final["kind"]]
    return f"Final model: {what}, {score} ({final.get('reason')})"
