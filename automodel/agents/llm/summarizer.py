"""The Summarizer: each module condensed to its key methods and hyperparameters.

The hyperparameters are read from the module's UPPER_CASE block by trusted
code (automodel.hparams), so they are exact; the LLM adds one line naming the
methods, and a value that line states against the code is set to the code's
and recorded under "corrected" (automodel.agents.llm.summary_check). Only
modules not summarized before are sent (an iteration changes one module), and
a failed or malformed summary never stops the run: a keyword scan of the code
stands in for it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from automodel.agents.llm import prompts
from automodel.agents.llm.client import ChatClient
from automodel.agents.llm.config import LLMConfig
from automodel.agents.llm.decision import ReplyFormatError, parse_object
from automodel.agents.llm.summary_check import check_summary
from automodel.core import MODULES, Pipeline
from automodel.errors import AutomodelError
from automodel.hparams import read_hparams

log = logging.getLogger("automodel.llm")

VALUE_CHARS = 80  # a hyperparameter's value shown in a summary, at most

# What a keyword scan can tell about a module when the LLM's summary is unavailable.
_METHODS = [
    (r"timm\.create_model\(\s*['\"]([\w.\-]+)", "timm {0}"),
    (r"torchvision\.models\.(\w+)\(", "torchvision {0}"),
    (r"RandAugment", "RandAugment"), (r"TrivialAugment", "TrivialAugmentWide"), (r"AutoAugment", "AutoAugment"),
    (r"RandomResizedCrop", "random resized crop"), (r"RandomCrop|pad.*crop|crop.*pad", "random crop"),
    (r"HorizontalFlip|hflip|flip\(", "flips"), (r"ColorJitter", "colour jitter"),
    (r"RandomErasing|[Cc]utout", "random erasing"), (r"[Mm]ix[Uu]p", "MixUp"), (r"[Cc]ut[Mm]ix", "CutMix"),
    (r"Normalize|mean|std", "normalisation"),
    (r"BatchNorm", "BatchNorm"), (r"residual|shortcut|skip", "residual blocks"), (r"Dropout", "dropout"),
    (r"AdaptiveAvgPool|mean\(\s*\(?-?[23]", "global average pooling"),
    (r"AdamW", "AdamW"), (r"optim\.SGD", "SGD"), (r"optim\.Adam\b", "Adam"),
    (r"[Cc]osine|math\.cos", "cosine schedule"), (r"OneCycle", "OneCycle schedule"), (r"[Ww]armup|WARMUP", "warmup"),
    (r"label_smoothing", "label smoothing"), (r"\bema\b|EMA", "EMA of weights"),
    (r"autocast", "mixed precision"), (r"GradScaler", "grad scaler"), (r"channels_last", "channels_last"),
    (r"clip_grad", "gradient clipping"), (r"ctx\.checkpoint", "checkpoints"),
]


def describe_methods(source: str) -> str:
    """A keyword scan of the code: what it visibly uses, in a fixed order."""
    found: list[str] = []
    for pattern, label in _METHODS:
        m = re.search(pattern, source)
        if m:
            text = label.format(*m.groups()) if m.groups() else label
            if text not in found:
                found.append(text)
    convs = len(re.findall(r"Conv2d\(", source))
    if convs:
        found.insert(0, f"{convs} Conv2d layer definitions")
    return ", ".join(found) or "no recognised methods"


def _clip(value: Any) -> Any:
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def _digest(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


class Summarizer:
    def __init__(self, chat: ChatClient, config: LLMConfig):
        self.chat = chat
        self.config = config
        self._memo: dict[str, tuple[str, list[dict[str, Any]]]] = {}  # source digest -> methods line, corrections

    def _ask(self, pipeline: Pipeline, modules: list[str]) -> dict[str, str]:
        cap = self.config.summary_chars
        messages = prompts.messages(
            "summarizer.system.j2", "summarizer.user.j2",
            modules=modules, pipeline={m: pipeline.module(m) for m in modules}, max_chars=cap,
        )
        try:
            reply = self.chat.complete("summarizer", messages)
            data = parse_object(reply.text)
        except (AutomodelError, ReplyFormatError) as err:
            log.warning("LLM summary unavailable (%s); using a keyword scan of the code", err)
            return {}
        out = {}
        for module in modules:
            text = data.get(module)
            if isinstance(text, dict):
                text = "; ".join(f"{k}: {v}" for k, v in text.items())
            if isinstance(text, str) and text.strip():
                text = " ".join(text.split())
                out[module] = text if len(text) <= cap else text[: cap - 1] + "…"
        return out

    def summarize(self, pipeline: Pipeline, result: dict[str, Any]) -> dict[str, Any]:
        pending = [m for m in MODULES if _digest(pipeline.module(m)) not in self._memo]
        from_llm = self._ask(pipeline, pending) if pending else {}
        summary: dict[str, Any] = {}
        for module in MODULES:
            source = pipeline.module(module)
            key = _digest(source)
            hparams = read_hparams(source)
            if key not in self._memo and module in from_llm:
                text, wrong = check_summary(from_llm[module], hparams)
                for c in wrong:
                    log.warning("LLM summary of %s.py said %s = %s; the code has %r (corrected)",
                                module, c.name, c.stated, c.code)
                self._memo[key] = (text, [c.to_json() for c in wrong])
            methods, corrected = self._memo.get(key, (None, []))
            # Same keys as the expert's summary where they mean the same, so history reads alike.
            summary[module] = {
                "methods": methods or describe_methods(source),
                "hparams": {k: _clip(v) for k, v in list(hparams.items())[:40]},
                "summarized_by": "llm" if methods else "keyword scan",
            }
            if corrected:
                summary[module]["corrected"] = corrected  # what the LLM's line said against the code
        # Validation figures only: test scores never reach an agent.
        summary["result"] = {
            k: result.get(k) for k in ("status", "val_accuracy", "train_accuracy", "seconds") if k in result
        }
        err = result.get("error") or {}
        if err:
            summary["result"]["error"] = (
                f"{err.get('type')} in {err.get('module')}.py: {' '.join(str(err.get('message', '')).split())[:200]}"
            )
        return summary
