"""`automodel diff RUN_DIR I J`: what changed between two iterations' modules."""

from __future__ import annotations

import difflib
from pathlib import Path

from automodel.core import MODULES
from automodel.errors import RunError
from automodel.search.workspace import RunDir


def register(sub) -> None:
    p = sub.add_parser("diff", help="unified diff of two iterations' data.py, model.py and train.py")
    p.add_argument("run_dir", type=Path)
    p.add_argument("i", type=int)
    p.add_argument("j", type=int)
    p.set_defaults(func=run)


def run(args) -> int:
    run_dir = RunDir.open(args.run_dir)
    for n in (args.i, args.j):
        if not (run_dir.iter_dir(n) / "data.py").exists():
            raise RunError(
                f"Iteration {n} has no modules in {run_dir.path} (it may not have run yet). See `automodel show "
                f"{run_dir.path}`."
            )
    for m in MODULES:
        a = (run_dir.iter_dir(args.i) / f"{m}.py").read_text(encoding="utf-8").splitlines(keepends=True)
        b = (run_dir.iter_dir(args.j) / f"{m}.py").read_text(encoding="utf-8").splitlines(keepends=True)
        print("".join(difflib.unified_diff(a, b, f"iter_{args.i:03d}/{m}.py", f"iter_{args.j:03d}/{m}.py")), end="")
    return 0
