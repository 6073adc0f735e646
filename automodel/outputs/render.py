"""The jinja2 environment of the report templates (report.html, report.md, MODEL_CARD.md)."""

from __future__ import annotations

import jinja2

from automodel.resources import template_environment


def environment() -> jinja2.Environment:
    env = template_environment("report", autoescape=jinja2.select_autoescape(["html"]),
                               trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["pct"] = lambda x: "-" if x is None else f"{100 * float(x):.2f}%"
    env.filters["acc"] = lambda x: "-" if x is None else f"{float(x):.4f}"
    env.filters["secs"] = lambda x: "-" if x is None else f"{float(x):.1f}"
    env.filters["mdcell"] = lambda x: str(x if x is not None else "-").replace("|", "\\|").replace("\n", " ")
    return env
