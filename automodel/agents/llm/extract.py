"""Getting data.py, model.py and train.py out of whatever an LLM replied.

Replies come as fenced blocks named in many ways (```python # data.py,
"### model.py" headings, a first-line comment, "Here is train.py:"), with
prose around them, sometimes without fences, sometimes with a block repeated
(the last complete one wins), sometimes cut off. This module finds the code
and says precisely what is wrong with it, so the caller can re-ask once.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from automodel.core import MODULES

# The top-level function that makes a block that module (data.py: either entry point of interfaces/data.py).
REQUIRED_DEF = {"data": ("build_batch_transforms", "build_transforms"), "model": ("build_model",), "train": ("train",)}
PYTHON_TAGS = {"", "python", "python3", "py", "py3", "ipython", "python-code"}

_FENCE_OPEN = re.compile(r"^\s{0,3}(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_MODULE_MENTION = re.compile(r"(?<![\w/.-])(data|model|train)\.py\b", re.IGNORECASE)
# A line that only names a file: "# data.py", "### model.py", "**train.py**", "File: data.py", "# ==== data.py ====".
_MARKER_LINE = re.compile(
    r"^\s*(?:#+|//|\*\*|__)?\s*[-=*#\s]*(?:file(?:name)?\s*[:=]?\s*|module\s*[:=]?\s*)?[`*_]*"
    r"(?P<name>data|model|train)\.py[`*_]*\s*[:\-=*#\s]*(?:\(.*\))?\s*$",
    re.IGNORECASE,
)
_CODE_START = re.compile(
    r"^(import\s|from\s+\S+\s+import\s|def\s|class\s|@|[A-Z_][A-Z0-9_]*\s*(:[^=]+)?=|#|\"\"\"|''')"
)
_REASONING = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.DOTALL | re.IGNORECASE)


@dataclass
class Block:
    lang: str
    info: str
    code: str
    closed: bool
    before: str  # prose between the previous block and this one
    name: str | None = None


@dataclass
class Extraction:
    modules: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # module -> what is wrong (missing, syntax, ...)
    truncated: bool = False  # an unclosed fence: the reply was cut off

    def ok(self, wanted: tuple[str, ...]) -> bool:
        return not self.truncated and all(m in self.modules and m not in self.problems for m in wanted)


def strip_reasoning(text: str) -> str:
    """Drop <think>…</think> sections that reasoning models put before their answer."""
    return _REASONING.sub("", text or "")


def module_problem(module: str, source: str) -> str | None:
    """Why `source` cannot be `module`.py as it is (syntax, required function), or None."""
    if not source.strip():
        return f"{module}.py is empty"
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        line = (err.text or "").strip()
        return f"{module}.py does not parse: {err.msg} at line {err.lineno}" + (f": {line}" if line else "")
    except ValueError as err:
        return f"{module}.py cannot be parsed: {err}"
    wanted = REQUIRED_DEF[module]
    if not any(isinstance(n, ast.FunctionDef) and n.name in wanted for n in tree.body):
        return f"{module}.py does not define the required top-level function {' or '.join(f + '()' for f in wanted)}"
    return None


def _defines(code: str) -> set[str]:
    """Modules whose required function this code defines at top level (regex: works on broken code too)."""
    found = set()
    for module, funcs in REQUIRED_DEF.items():
        if any(re.search(rf"^def\s+{func}\s*\(", code, re.MULTILINE) for func in funcs):
            found.add(module)
    return found


def find_blocks(text: str) -> list[Block]:
    """Fenced code blocks, in order. An unclosed final block runs to the end of the text.

    A fence that opens with a python tag while a block is still open closes
    that block first: models sometimes forget the closing fence between files.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    prose: list[str] = []
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m:
            prose.append(lines[i])
            i += 1
            continue
        fence, info = m.group("fence"), m.group("info").strip()
        lang = info.split()[0].lower() if info else ""
        body: list[str] = []
        carry: list[str] = []
        closed = False
        j = i + 1
        while j < len(lines):
            line = lines[j]
            stripped = line.strip()
            if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                closed = True
                j += 1
                break
            inner = _FENCE_OPEN.match(line)
            if inner and inner.group("info").strip() and inner.group("info").split()[0].lower() in PYTHON_TAGS - {""}:
                closed = True  # an unclosed block followed by the next file's block:
                while body and (not body[-1].strip() or _MARKER_LINE.match(body[-1])):
                    carry.insert(0, body.pop())  # its heading ("### model.py") belongs to the next block
                break
            body.append(line)
            j += 1
        blocks.append(Block(lang, info, "\n".join(body).strip("\n") + "\n", closed, "\n".join(prose)))
        prose = carry
        i = j
    return blocks


def _name_from_prose(prose: str) -> str | None:
    """The module named in the last few lines before a block ("### model.py", "Here is `train.py`:")."""
    lines = [ln for ln in prose.splitlines() if ln.strip()][-4:]
    for line in reversed(lines):
        mentions = _MODULE_MENTION.findall(line)
        if mentions:
            return mentions[0].lower()
    return None


def _name_block(block: Block) -> str | None:
    by_content = _defines(block.code)
    name = None
    m = _MODULE_MENTION.search(block.info)
    if m:
        name = m.group(1).lower()
    if name is None:
        for line in block.code.splitlines()[:3]:
            if line.lstrip().startswith("#"):
                m = _MODULE_MENTION.search(line)
                if m:
                    name = m.group(1).lower()
                    break
    if name is None:
        name = _name_from_prose(block.before)
    # Content wins when the label contradicts it (e.g. "model.py" over a block defining only build_transforms).
    if len(by_content) == 1 and (name is None or name not in by_content):
        only = next(iter(by_content))
        if name is None or name not in _defines(block.code):
            name = only
    return name


def _split_on_markers(code: str) -> list[tuple[str | None, str]]:
    """Split text at lines that only name a module file; [(name, text), ...]."""
    parts: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in code.splitlines():
        m = _MARKER_LINE.match(line)
        if m:
            parts.append(
                (
                    m.group("name").lower(),
                    [line] if line.lstrip().startswith("#") and not line.lstrip().startswith("##") else [],
                )
            )
        else:
            parts[-1][1].append(line)
    return [(name, "\n".join(body).strip("\n") + "\n") for name, body in parts if "\n".join(body).strip()]


def _is_prose(line: str) -> bool:
    s = line.rstrip()
    if not s.strip():
        return False
    if s[0] in " \t":
        return False
    if re.match(r"^(\*\*|[-*+>] |\d+[.)] |#{2,}\s|Note\b|Here\b|This\b|The\b)", s):
        return True
    if _CODE_START.match(s) or s.endswith((":", "(", "[", "{", ",", "\\")):
        return False
    try:
        ast.parse(s)
        return False
    except SyntaxError:
        return len(s.split()) >= 3


def salvage(text: str) -> str:
    """Code from unfenced text: drop prose lines before the first code line and after the last."""
    lines = text.splitlines()
    start = next(
        (i for i, ln in enumerate(lines) if _CODE_START.match(ln) and not re.match(r"^#{2,}\s", ln)), len(lines)
    )
    lines = lines[start:]
    while lines and (not lines[-1].strip() or _is_prose(lines[-1])):
        lines.pop()
    return "\n".join(lines) + ("\n" if lines else "")


def _candidates(text: str, finish_reason: str | None) -> tuple[list[tuple[str, str, bool]], bool]:
    """[(module, code, closed)] in reply order, and whether the reply was cut off."""
    text = strip_reasoning(text)
    blocks = [b for b in find_blocks(text) if b.lang in PYTHON_TAGS or _MODULE_MENTION.search(b.info)]
    truncated = finish_reason == "length" or any(not b.closed for b in blocks)
    found: list[tuple[str, str, bool]] = []
    if blocks:
        for b in blocks:
            markers = [m for m in (_MARKER_LINE.match(ln) for ln in b.code.splitlines()) if m]
            if len({m.group("name").lower() for m in markers}) >= 2 or len(_defines(b.code)) >= 2:
                # Several files inside one block, separated by "# data.py"-style lines.
                for name, part in _split_on_markers(b.code):
                    if name is None:
                        defs = _defines(part)
                        name = next(iter(defs)) if len(defs) == 1 else None
                    if name:
                        found.append((name, part, b.closed))
                continue
            b.name = _name_block(b)
            if b.name:
                found.append((b.name, b.code, b.closed))
        if not found:
            # One unlabelled python block that defines nothing we know: keep it nameless.
            found = [(None, b.code, b.closed) for b in blocks if b.lang in PYTHON_TAGS]  # type: ignore[misc]
        return found, truncated
    # No fences at all: split on file headings, then strip the prose around each part.
    for name, part in _split_on_markers(text):
        code = salvage(part)
        if not code.strip():
            continue
        if name is None:
            defs = _defines(code)
            name = next(iter(defs)) if len(defs) == 1 else None
        found.append((name, code, True))  # type: ignore[arg-type]
    return found, truncated


def _pick(options: list[tuple[str, bool]], module: str) -> str:
    """The last complete candidate (closed and usable), else the last closed one, else the last."""
    for code, closed in reversed(options):
        if closed and module_problem(module, code) is None:
            return code
    for code, closed in reversed(options):
        if closed:
            return code
    return options[-1][0]


def extract_modules(text: str, wanted: tuple[str, ...] = MODULES, finish_reason: str | None = None) -> Extraction:
    """Find the wanted modules in a reply and report what is wrong with each."""
    found, truncated = _candidates(text, finish_reason)
    result = Extraction(truncated=truncated)
    by_module: dict[str, list[tuple[str, bool]]] = {}
    for name, code, closed in found:
        if name in wanted:
            by_module.setdefault(name, []).append((code, closed))
    # A single-module request answered with one unnamed block: that block is the module.
    if len(wanted) == 1 and wanted[0] not in by_module:
        unnamed = [(code, closed) for name, code, closed in found if name is None]
        if unnamed:
            by_module[wanted[0]] = unnamed[-1:]
    for module in wanted:
        if module not in by_module:
            result.problems[module] = f"{module}.py is missing from the reply"
            continue
        code = _pick(by_module[module], module)
        result.modules[module] = code
        problem = module_problem(module, code)
        if problem:
            result.problems[module] = problem
    if finish_reason == "length":
        result.truncated = True
    return result
