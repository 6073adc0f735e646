"""`automodel export RUN_DIR --format onnx|torchscript [--out FILE]`: the best model as a deployable file."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a run's best model to ONNX or TorchScript, with its preprocessing",
        description="Export the best model of RUN_DIR (inside the sandbox), check that the exported model "
        "reproduces PyTorch's outputs on sample images, measure its CPU latency, and write "
        "FILE.json next to it describing the preprocessing (input size, channels, mean/std).",
    )
    p.add_argument("run_dir", type=Path, help="a run folder made by `automodel fit`, e.g. workspace/<run>")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="file format (default onnx)")
    p.add_argument("--out", type=Path, help="file to write (default RUN_DIR/export/model.onnx or model.torchscript.pt)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for the latency measurement (default 1)")
    p.set_defaults(func=run)


def run(args) -> int:
    from automodel.outputs.export import export_best

    result = export_best(args.run_dir, args.format, args.out, threads=max(1, args.threads))
    print(result.text())
    return 0
