"""Rendering the role prompts in templates/prompts/ and keeping what goes into them bounded.

Templates use StrictUndefined: a missing variable is a bug to see at once,
not an empty hole in a prompt. Every role's system prompt starts with a line
`ROLE: <role>` so logs, and the replay server, can tell the roles apart.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import jinja2

from automodel.core import MODULES, Brief
from automodel.hardware import bf16_speedup
from automodel.resources import interface_text, template_environment

OMITTED = "… ({n} earlier items omitted)"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return template_environment(
        "prompts", trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False, autoescape=False
    )


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context).strip() + "\n"


def messages(system: str, user: str, **context: Any) -> list[dict[str, str]]:
    """A system and a user message rendered from two templates with the same variables."""
    return [
        {"role": "system", "content": render(system, **context)},
        {"role": "user", "content": render(user, **context)},
    ]


def interfaces(modules: tuple[str, ...] = MODULES) -> dict[str, str]:
    """The contract files, verbatim, as shown to the LLM."""
    return {m: interface_text(m) for m in modules}


# ---- bounding what goes into a prompt


def _flat(obj: Any) -> bool:
    """A scalar, or a list of scalars / short scalar lists (class names, curve points): shown on one line."""
    if isinstance(obj, (list, tuple)):
        return all(
            not isinstance(v, (dict, list, tuple)) or (isinstance(v, (list, tuple)) and _flat(v) and len(v) <= 4)
            for v in obj
        )
    return not isinstance(obj, dict)


def _dumps(obj: Any, depth: int = 0) -> str:
    """Indented JSON with flat lists kept on one line: readable, and far fewer characters."""
    pad, inner = " " * depth, " " * (depth + 1)
    if _flat(obj):
        return json.dumps(obj, ensure_ascii=False, default=str)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {_dumps(v, depth + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    return "[\n" + ",\n".join(inner + _dumps(v, depth + 1) for v in obj) + "\n" + pad + "]"


def _clip_strings(obj: Any, limit: int) -> Any:
    if isinstance(obj, str):
        return obj if len(obj) <= limit else obj[: max(1, limit - 1)] + "…"
    if isinstance(obj, dict):
        return {k: _clip_strings(v, limit) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clip_strings(v, limit) for v in obj]
    return obj


def _clip_lists(obj: Any, keep: int) -> Any:
    """Keep the newest `keep` items of every list (the end of a list is the recent history)."""
    if isinstance(obj, dict):
        return {k: _clip_lists(v, keep) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_clip_lists(v, keep) for v in obj]
        if len(items) > keep:
            return [OMITTED.format(n=len(items) - keep)] + items[-keep:]
        return items
    return obj


def bounded_json(obj: Any, max_chars: int) -> str:
    """`obj` as indented JSON of at most `max_chars` characters, shortened gracefully.

    First long strings are clipped, then long lists keep only their newest
    items, and only as a last resort is the text cut; so however long a run
    gets, the prompt built from it stays under a fixed size.
    """
    text = _dumps(obj)
    if len(text) <= max_chars:
        return text
    for limit in (600, 300, 150, 80, 40):
        clipped = _clip_strings(obj, limit)
        text = _dumps(clipped)
        if len(text) <= max_chars:
            return text
        for keep in (24, 12, 6, 3, 1):
            text = _dumps(_clip_lists(clipped, keep))
            if len(text) <= max_chars:
                return text
    marker = "\n… (cut to fit the prompt)"
    return text[: max(0, max_chars - len(marker))] + marker


def brief_context(brief: Brief | None, profile_chars: int) -> dict[str, Any]:
    """Template variables describing the task, the data, the hardware and the budget."""
    if brief is None:
        return {"brief": None}
    hw = brief.hardware
    hardware = f"{hw.cpu_cores} CPU cores"
    if hw.memory_gb:
        hardware += f", {hw.memory_gb:.0f} GB RAM"
    if hw.device == "cuda":
        hardware += f", GPU {hw.gpu_name or 'CUDA'}" + (f" ({hw.gpu_memory_gb:.0f} GB)" if hw.gpu_memory_gb else "")
    else:
        hardware += ", no GPU (training runs on the CPU)"
    info = {k: v for k, v in brief.info.items() if k != "class_names"}
    names = list(brief.info.get("class_names", []))
    return {
        "brief": {
            "profile": bounded_json(brief.profile, profile_chars),
            "info": bounded_json(info, 1500),
            "class_names": bounded_json(names[:200], 1500)
            + (f" (+{len(names) - 200} more)" if len(names) > 200 else ""),
            "description": (brief.description or "").strip()[:3000],
            "hardware": hardware,
            "device": hw.device,
            "time_per_iter": int(round(brief.time_per_iter)),
            "final_seconds": int(round(brief.final_seconds)),
            "pretrained_cache": list(brief.pretrained_cache),
            "throughput": throughput_text(brief.throughput, brief.info.get("num_train"), brief.time_per_iter),
        }
    }


def throughput_text(figures: dict[str, Any] | None, num_train: Any, seconds: float) -> str | None:
    """The throughput probe's figures in words, with the epochs they buy, so the first pipeline is sized
    from a measurement rather than from the number of cores."""
    rates = (figures or {}).get("images_per_second") or {}
    if not rates:
        return None
    parts = []
    for width, rate in rates.items():
        text = f"{float(rate):,.0f} training images/s at WIDTH {width}"
        if isinstance(num_train, int) and num_train > 0:
            text += f" (about {float(rate) * seconds / num_train:.1f} epochs of the {num_train} training images in " \
                    f"{seconds:.0f} s)"
        parts.append(text)
    size = figures.get("input_size")
    at = f", at {size} px" if size else ""
    text = (f"a reference CNN (a stem of WIDTH channels, then {figures.get('stages', 3)} conv-BN stages doubling "
             f"it, batch {figures.get('batch_size', '?')}{at}) trains " + "; ".join(parts))
    speedup = bf16_speedup(figures)
    if speedup:
        text += (f". In bfloat16 autocast it trained {speedup:.1f}x faster than these float32 figures at WIDTH "
                 f"{next(iter(figures['bf16_images_per_second']))}: this CPU has bf16 matrix units, so use autocast")
    return text
