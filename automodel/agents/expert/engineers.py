"""The built-in Data, Model and Training Engineers.

They carry out the Analyst's structured edit by rewriting the values of the
module's UPPER_CASE constants (automodel.hparams), leaving every other line
as it was. Repairs: a timeout or out-of-memory is repaired by making the
module cheaper; other errors are beyond a rule-based engineer and are
reported as such (the LLM brain repairs code).
"""

from __future__ import annotations

from automodel.core import Decision, Pipeline
from automodel.errors import AutomodelError
from automodel.hparams import HParamError, read_hparams, set_hparams

# Knobs that make training cheaper, per module, with the factor applied on repair.
CHEAPER = {"model": {"WIDTH": 0.5}, "train": {"BATCH_SIZE": 0.5}, "data": {"INPUT_SIZE": 0.75}}


class CannotRepair(AutomodelError):
    """The expert engineer has no rule for this failure."""


def _scaled(source: str, factors: dict[str, float]) -> dict:
    hp = read_hparams(source)
    changes = {}
    for key, factor in factors.items():
        v = hp.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            new = v * factor
            changes[key] = max(1, int(round(new))) if isinstance(v, int) else float(f"{new:.6g}")
    return changes


def apply_edit(module: str, pipeline: Pipeline, decision: Decision) -> str:
    source = pipeline.module(module)
    edit = decision.edit or {}
    changes = dict(edit.get("set") or {})
    changes.update(_scaled(source, edit.get("set_scale") or {}))
    if not changes:
        raise CannotRepair(f"The {module} engineer found nothing to change in {module}.py for: {decision.instruction}")
    try:
        return set_hparams(source, changes)
    except HParamError as err:
        raise CannotRepair(f"{module}.py cannot take the edit '{decision.instruction}': {err}") from err


def repair(module: str, pipeline: Pipeline, error: str) -> str:
    """Repair rules: only resource failures (time, memory) have a safe, general fix."""
    lowered = error.lower()
    if any(word in lowered for word in ("timeout", "timed out", "out of memory", "oom", "memory limit")):
        changes = _scaled(pipeline.module(module), CHEAPER.get(module, {}))
        if changes:
            return set_hparams(pipeline.module(module), changes)
    raise CannotRepair(
        f"The built-in {module} engineer cannot repair this error: {error.splitlines()[0] if error else 'unknown'}"
    )
