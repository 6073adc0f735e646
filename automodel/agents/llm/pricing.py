"""What an LLM call cost, from a table of prices per million tokens.

The built-in table holds list prices of common OpenAI models (USD per 1M
tokens, standard tier, as published in 2025; prices change, so check them).
Users add or override entries with a JSON or YAML file named by the
AUTOMODEL_PRICES environment variable (or passed to `load_prices`), shaped

    {"my-model": {"input": 0.5, "output": 1.5}, "local-llama": {"input": 0, "output": 0}}

or with `[input, output]` pairs. AUTOMODEL_PRICES may also hold that JSON
object inline. A model the table does not know has no cost (None), never a
guessed one.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from automodel.errors import LLMConfigError

ENV_VAR = "AUTOMODEL_PRICES"


@dataclass(frozen=True)
class Price:
    input: float    # USD per 1M prompt tokens
    output: float   # USD per 1M completion tokens

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


BUILTIN: dict[str, Price] = {
    "gpt-5": Price(1.25, 10.0),
    "gpt-5-mini": Price(0.25, 2.0),
    "gpt-5-nano": Price(0.05, 0.40),
    "gpt-4.1": Price(2.0, 8.0),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4o": Price(2.50, 10.0),
    "gpt-4o-mini": Price(0.15, 0.60),
    "o3": Price(2.0, 8.0),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    "o1": Price(15.0, 60.0),
    "gpt-4-turbo": Price(10.0, 30.0),
    "gpt-3.5-turbo": Price(0.50, 1.50),
}

# A dated snapshot ("gpt-4o-mini-2024-07-18") costs what its family costs.
_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")


def _parse_entry(name: str, value: Any, source: str) -> Price:
    try:
        if isinstance(value, dict):
            price = Price(float(value["input"]), float(value["output"]))
        elif isinstance(value, (list, tuple)) and len(value) == 2:
            price = Price(float(value[0]), float(value[1]))
        else:
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise LLMConfigError(
            f"The price table {source} has an unusable entry for '{name}': {value!r}. "
            'Give each model {"input": USD_per_1M_prompt_tokens, "output": USD_per_1M_completion_tokens} '
            "or a pair [input, output]."
        ) from None
    if price.input < 0 or price.output < 0:
        raise LLMConfigError(
            f"The price table {source} gives '{name}' a negative price {value!r}; prices are USD per 1M tokens, 0 "
            "or more."
        )
    return price


def _parse_table(data: Any, source: str) -> dict[str, Price]:
    if not isinstance(data, dict):
        raise LLMConfigError(
            f"The price table {source} must be a mapping of model name to prices, e.g. "
            '{"my-model": {"input": 0.5, "output": 1.5}}; it is a ' + type(data).__name__ + "."
        )
    return {str(name): _parse_entry(str(name), value, source) for name, value in data.items()}


def load_prices(path: str | Path) -> dict[str, Price]:
    """Read a user's price file (JSON, or YAML when it ends in .yaml/.yml)."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise LLMConfigError(
            f"Cannot read the price table {path} ({err.strerror}). Fix the path in {ENV_VAR} or create the file."
        ) from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:  # noqa: BLE001 - any parse error becomes one message
        raise LLMConfigError(
            f"The price table {path} is not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'}: "
            f"{err}. Fix the file or unset {ENV_VAR}."
        ) from None
    return _parse_table(data or {}, str(path))


def price_table(env: dict[str, str] | None = None) -> dict[str, Price]:
    """The built-in table with the user's entries (AUTOMODEL_PRICES) on top."""
    env = os.environ if env is None else env
    table = dict(BUILTIN)
    spec = (env.get(ENV_VAR) or "").strip()
    if spec.startswith("{"):
        try:
            table.update(_parse_table(json.loads(spec), f"in ${ENV_VAR}"))
        except json.JSONDecodeError as err:
            raise LLMConfigError(
                f"${ENV_VAR} starts with "
                f"'{{' but is not valid JSON ({err}). Give a JSON object or the path of a JSON/YAML file."
            ) from None
    elif spec:
        table.update(load_prices(spec))
    return table


def price_for(model: str, table: dict[str, Price] | None = None) -> Price | None:
    """The price of `model`: an exact entry, else its undated family, else None."""
    table = price_table() if table is None else table
    name = model.strip()
    if name in table:
        return table[name]
    # Hosted names sometimes carry a provider prefix ("openai/gpt-4o").
    bare = name.rsplit("/", 1)[-1]
    if bare in table:
        return table[bare]
    undated = _DATE_SUFFIX.sub("", bare)
    return table.get(undated)


def cost_usd(
    model: str, prompt_tokens: int, completion_tokens: int, table: dict[str, Price] | None = None
) -> float | None:
    price = price_for(model, table)
    return None if price is None else round(price.cost(prompt_tokens, completion_tokens), 8)
