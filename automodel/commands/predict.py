"""`automodel predict RUN_DIR IMAGES [--out CSV] [--top-k K]`: classify new images with the best model."""

from __future__ import annotations

import sys
from pathlib import Path

from automodel.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="classify new images with a run's best model and write a CSV",
        description="Decode IMAGES (one image or a folder, searched recursively) the way the run's data was "
        "decoded, apply the best pipeline's eval transform and model in the sandbox, and write "
        "filename,label,confidence (plus label_K,confidence_K columns with --top-k).",
    )
    p.add_argument("run_dir", type=Path, help="a run folder made by `automodel fit`, e.g. workspace/<run>")
    p.add_argument("images", type=Path, help="an image file or a folder of images")
    p.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write (default ./predictions.csv)")
    p.add_argument("--top-k", type=int, default=1, metavar="K", help="also list the K most likely classes (default 1)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for the model (default: all cores)")
    p.set_defaults(func=run)


def run(args) -> int:
    from automodel.outputs.predict import check_writable, csv_text, predict_paths, write_csv

    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}.")
    check_writable(args.out)  # fail before decoding and starting the sandbox
    pred = predict_paths(args.run_dir, args.images, threads=max(0, args.threads))
    write_csv(csv_text(pred, args.top_k), args.out)
    for item in pred.skipped:
        print(f"automodel: skipped {item['path']}: {item['reason']}", file=sys.stderr)
    counts: dict[str, int] = {}
    for label in pred.labels():
        counts[label] = counts.get(label, 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10])
    print(
        f"Predicted {len(pred.files)} image(s)"
        + (f", skipped {len(pred.skipped)} unreadable" if pred.skipped else "")
        + f": {summary}. Wrote {args.out}"
    )
    return 0
