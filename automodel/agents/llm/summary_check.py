"""Keep the LLM's one-line summary of a module true to the module's code.

The Summarizer's hyperparameters come from the code (automodel.hparams); the
LLM only writes the prose. Prose can still state a value ("AdamW at lr 0.01")
that the code does not have, and the Analyst would be misled by it. Here every
number the prose attaches to a hyperparameter is compared with the code's
value; a wrong one is replaced by the code's value and reported.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

# Words prose uses for common constants besides their own name ("LABEL_SMOOTHING", "label smoothing").
ALIASES = {
    "LR": ("learning rate", "lr"),
    "BASE_LR": ("learning rate", "lr"),
    "WEIGHT_DECAY": ("weight decay", "wd"),
    "BATCH_SIZE": ("batch size",),
}
_NUMBER = r"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_JOIN = r"\s*(?:=|:|of|to|at|is)?\s*"


@dataclass(frozen=True)
class Contradiction:
    name: str        # the constant in the code
    stated: float    # what the prose said
    code: Any        # what the code has

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "stated": self.stated, "code": self.code}


def _names(name: str) -> list[str]:
    spoken = name.lower().replace("_", " ")
    return sorted({name, spoken, *ALIASES.get(name, ())}, key=len, reverse=True)


def _same(stated: float, value: float) -> bool:
    return math.isclose(stated, value, rel_tol=1e-6, abs_tol=1e-12)


def check_summary(text: str, hparams: dict[str, Any]) -> tuple[str, list[Contradiction]]:
    """`text` with every hyperparameter value it states set to the code's, and what was wrong."""
    found: list[Contradiction] = []
    for name, value in hparams.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        alternatives = "|".join(re.escape(n) for n in _names(name))
        pattern = re.compile(rf"(?<![\w.])(?:{alternatives})\b{_JOIN}{_NUMBER}(?![\w.])", re.IGNORECASE)

        def fix(m: re.Match[str], name: str = name, value: float = value) -> str:
            stated = float(m.group(1))
            if _same(stated, float(value)):
                return m.group(0)
            found.append(Contradiction(name, stated, value))
            start, end = m.span(1)
            return m.group(0)[: start - m.start()] + repr(value) + m.group(0)[end - m.start():]

        text = pattern.sub(fix, text)
    return text, found
