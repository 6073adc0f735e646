"""`automodel report RUN_DIR`: write report.html, report.md, MODEL_CARD.md and the TensorBoard logs."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write a run's report (HTML and Markdown), model card and TensorBoard logs",
        description="Write RUN_DIR/report.html (self-contained, viewable offline), RUN_DIR/report.md with "
        "its plots in RUN_DIR/report_files/, RUN_DIR/MODEL_CARD.md, RUN_DIR/tb/ for "
        "`tensorboard --logdir RUN_DIR`, and submission.csv when the dataset has unlabelled "
        "test images. `automodel fit` does this at the end of every run.",
    )
    p.add_argument("run_dir", type=Path, help="a run folder made by `automodel fit`, e.g. workspace/<run>")
    p.set_defaults(func=run)


def run(args) -> int:
    from automodel.outputs.report import write_outputs

    for path in write_outputs(args.run_dir):
        print(f"wrote {path}")
    return 0
