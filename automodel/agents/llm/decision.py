"""Reading a JSON object out of an LLM reply, and turning it into the Analyst's Decision.

Works without function calling: the object may sit in a ```json fence, among
prose, with single quotes or trailing commas. A reply that still yields no
usable decision raises ReplyFormatError whose message is sent back to the
model verbatim, so it says exactly what to fix.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

from automodel.agents.llm.extract import strip_reasoning
from automodel.core import MODULES, Decision

MAX_INSTRUCTION = 2000

_FENCED_JSON = re.compile(r"```+\s*(?:json5?|javascript|js)?\s*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")

TARGET_WORDS = {
    "data": (
        "data",
        "data engineer",
        "data_engineer",
        "dataengineer",
        "dataset",
        "augmentation",
        "transforms",
        "data.py",
    ),
    "model": (
        "model",
        "model engineer",
        "model_engineer",
        "modelengineer",
        "architecture",
        "network",
        "backbone",
        "model.py",
    ),
    "train": (
        "train",
        "training",
        "training engineer",
        "training_engineer",
        "trainingengineer",
        "train engineer",
        "train_engineer",
        "trainer",
        "optimization",
        "optimisation",
        "train.py",
    ),
}


class ReplyFormatError(ValueError):
    """The reply holds no usable JSON object; str() says what to fix."""


def _balanced_objects(text: str) -> list[str]:
    """Substrings of `text` that are brace-balanced {...} (strings respected), outermost first."""
    out = []
    i = 0
    while True:
        start = text.find("{", i)
        if start < 0:
            return out
        depth, in_str, quote, esc = 0, False, "", False
        for j in range(start, len(text)):
            c = text[j]
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == quote:
                    in_str = False
            elif c in "\"'":
                in_str, quote = True, c
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    out.append(text[start : j + 1])
                    i = j + 1
                    break
        else:
            # Unbalanced from here (cut-off reply); try the next brace.
            i = start + 1


def _load(candidate: str) -> Any:
    try:
        return json.loads(candidate)
    except json.JSONDecodeError as err:
        first = err
    try:
        return json.loads(_TRAILING_COMMA.sub(r"\1", candidate))
    except json.JSONDecodeError:
        pass
    try:
        # Python-style dicts: single quotes, True/False/None.
        return ast.literal_eval(candidate)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise first from None


def _objects_in(piece: str) -> tuple[list[dict[str, Any]], str | None]:
    objects: list[dict[str, Any]] = []
    error = None
    for candidate in _balanced_objects(piece):
        try:
            value = _load(candidate)
        except json.JSONDecodeError as err:
            error = error or f"{err.msg} at line {err.lineno} column {err.colno} of the JSON object"
            continue
        if isinstance(value, dict):
            objects.append(value)
    return objects, error


def json_objects(text: str, fenced_only: bool = False) -> tuple[list[dict[str, Any]], str | None]:
    """Every JSON object found in the reply (fenced ones first) and the first parse error seen.

    With `fenced_only`, the objects of the fenced blocks alone when there are any (so a list in a fence is
    not read twice, from the fence and from the whole text)."""
    text = strip_reasoning(text)
    fenced = [m.group(1) for m in _FENCED_JSON.finditer(text)]
    objects: list[dict[str, Any]] = []
    error = None
    for piece in fenced + [text]:
        if fenced_only and objects and piece is text:
            break
        found, problem = _objects_in(piece)
        objects += found
        error = error or problem
    if not objects and error is None and "{" in text:
        error = "the JSON object is not closed (the reply seems cut off)"
    return objects, error


def normalize_target(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    key = " ".join(value.strip().lower().replace("-", " ").split())
    for target, words in TARGET_WORDS.items():
        if key in words:
            return target
    return None


def _field(obj: dict[str, Any], *names: str) -> Any:
    lowered = {str(k).strip().lower(): v for k, v in obj.items()}
    for name in names:
        if name in lowered:
            return lowered[name]
    return None


_SHAPE = '{"target": "data" | "model" | "train", "instruction": "...", "reason": "..."}'
# Fields under which a reply may wrap its list of decisions in one object.
_LIST_FIELDS = ("candidates", "decisions", "proposals", "changes", "instructions", "items")


def decision_from(obj: dict[str, Any]) -> Decision:
    """One decision from one JSON object; ReplyFormatError says what is wrong with it."""
    raw_target = _field(obj, "target", "engineer", "module")
    if raw_target is None:
        keys = ", ".join(sorted(str(k) for k in obj))
        raise ReplyFormatError(
            f'the JSON object has no "target" field (it has: {keys}). Add "target": one of "data", "model", "train".'
        )
    target = normalize_target(raw_target)
    if target not in MODULES:
        raise ReplyFormatError(
            f'"target" is {raw_target!r}; it must be one of "data", "model", "train" (the module whose engineer acts).'
        )
    instruction = _field(obj, "instruction", "instructions", "action", "change")
    if isinstance(instruction, list):
        instruction = " ".join(str(x) for x in instruction)
    if not isinstance(instruction, str) or not instruction.strip():
        raise ReplyFormatError('"instruction" is missing or empty. Say in plain words what the engineer should change.')
    reason = _field(obj, "reason", "rationale", "why", "justification")
    reason = reason if isinstance(reason, str) else ("" if reason is None else json.dumps(reason))
    return Decision(
        target=target, instruction=instruction.strip()[:MAX_INSTRUCTION], reason=reason.strip()[:MAX_INSTRUCTION]
    )


def parse_decision(text: str) -> Decision:
    """The Analyst's decision from its reply; ReplyFormatError says what is wrong."""
    objects, error = json_objects(text)
    if not objects:
        raise ReplyFormatError(
            "no JSON object found in the reply" + (f" ({error})" if error else "")
            + f". Reply with exactly one JSON object: {_SHAPE}"
        )
    with_target = [o for o in objects if _field(o, "target", "engineer", "module") is not None]
    return decision_from(with_target[0] if with_target else objects[0])


@dataclass(frozen=True)
class Round:
    """The usable decisions of a K-item reply, and what was wrong with the other items."""

    decisions: list[Decision]
    problems: list[str]


def _items(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reply's items: the objects themselves, or the list one object wraps them in."""
    items: list[dict[str, Any]] = []
    for obj in objects:
        wrapped = next((v for k, v in obj.items() if str(k).strip().lower() in _LIST_FIELDS and isinstance(v, list)),
                       None)
        if wrapped is not None and _field(obj, "target", "engineer", "module") is None:
            items.extend(x if isinstance(x, dict) else {"instruction": x} for x in wrapped)
        else:
            items.append(obj)
    return items


def parse_round(text: str, count: int, tried: set[str]) -> Round:
    """Up to `count` distinct decisions from a reply holding a JSON list of them (or one object).

    An item that is not a usable decision, repeats an earlier item, or repeats a change already tried
    (`tried`: Decision.key() values) is left out and named in `problems`. ReplyFormatError when no
    item at all is usable."""
    objects, error = json_objects(text, fenced_only=True)
    if not objects:
        raise ReplyFormatError(
            "no JSON object found in the reply" + (f" ({error})" if error else "")
            + f". Reply with a JSON list of {count} objects, each {_SHAPE}"
        )
    decisions: list[Decision] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for number, item in enumerate(_items(objects), start=1):
        try:
            decision = decision_from(item)
        except ReplyFormatError as err:
            problems.append(f"item {number}: {err}")
            continue
        key = decision.key()
        if key in tried:
            problems.append(f"item {number} repeats a change already tried on the best pipeline")
        elif key in seen:
            problems.append(f"item {number} repeats item {seen[key]}")
        elif len(decisions) < count:
            seen[key] = number
            decisions.append(decision)
    if not decisions:
        raise ReplyFormatError("no usable item in the reply: " + "; ".join(problems))
    if len(decisions) < count and not problems:
        problems.append(f"the reply has {len(decisions)} usable items; {count} distinct changes were asked for")
    return Round(decisions, problems)


def parse_object(text: str) -> dict[str, Any]:
    """The first JSON object of a reply (for the Summarizer); ReplyFormatError if none."""
    objects, error = json_objects(text)
    if not objects:
        raise ReplyFormatError("no JSON object found in the reply" + (f" ({error})" if error else ""))
    return objects[0]
