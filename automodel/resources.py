"""Where the packaged interfaces and templates live (works for editable and normal installs)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def interface_path(module: str) -> Path:
    """Path of interfaces/<module>.py, the contract shown verbatim to engineers."""
    return Path(str(resources.files("automodel.interfaces").joinpath(f"{module}.py")))


def interface_text(module: str) -> str:
    return interface_path(module).read_text(encoding="utf-8")


def templates_dir() -> Path:
    return Path(str(resources.files("automodel.templates")))


def template_environment(folder: str, **options):
    """A jinja2 environment over templates/<folder>/ that fails on any undefined name.

    `options` are the folder's own jinja2 settings (whitespace, escaping)."""
    import jinja2  # here, not at import time: most commands never render a template

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir() / folder)),
                              undefined=jinja2.StrictUndefined, **options)
