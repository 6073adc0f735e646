"""An installed (non-editable) automodel finds its interfaces, templates and registry."""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_interfaces_templates_and_registry(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = set(zipfile.ZipFile(next(tmp_path.glob("automodel-*.whl"))).namelist())
    for module in ("data", "model", "train"):
        assert f"automodel/interfaces/{module}.py" in names
        assert f"automodel/templates/pipelines/{module}.py.j2" in names
    assert "automodel/datasets/datasets.yaml" in names
    assert "automodel/sandbox/child.py" in names and "automodel/sandbox/export_child.py" in names
    # Every package of the source tree is in the wheel (pyproject lists them by hand).
    for init in (REPO / "automodel").rglob("__init__.py"):
        assert init.relative_to(REPO).as_posix() in names
    assert any(n.startswith("automodel/templates/prompts/") and n.endswith(".j2") for n in names)
    assert any(n.startswith("automodel/templates/report/") for n in names)
    assert "automodel/templates/serve/description.md.j2" in names  # the service's OpenAPI description
