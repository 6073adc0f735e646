"""`automodel serve RUN [--host H] [--port P] [--workers N]`: the run's model as an HTTP service.

Needs the serving extra (`pip install 'automodel[serve]'`). The model runs from
the run's ONNX export with onnxruntime (made first, in the sandbox, when
missing); see automodel/outputs/serve.py for the endpoints.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from automodel.errors import UsageError


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    return parse


def register(sub) -> None:
    from automodel.commands.fit import positive_int

    p = sub.add_parser(
        "serve",
        help="serve a run's best model over HTTP (POST /predict, GET /health, /info, /docs)",
        description="Serve the best model of RUN_DIR over HTTP with FastAPI and uvicorn. The model runs from the "
        "run's ONNX export with onnxruntime, so no generated code runs in the service; without an export, one is "
        "made first in the sandbox (with its parity check). Concurrent requests are batched. At start the latency "
        "and memory on this machine are measured and printed (and returned by GET /info). Ctrl-C stops it.",
    )
    p.add_argument("run_dir", type=Path, help="a run folder made by `automodel fit`, e.g. workspace/<run>")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=positive_int, default=1, help="server processes (default 1)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads per process (default: cores/workers)")
    p.add_argument("--max-upload-mb", type=_positive(float), default=20.0, metavar="MB",
                   help="largest file accepted per upload (default 20)")
    p.add_argument("--max-pixels", type=_positive(int), default=60_000_000, metavar="N",
                   help="largest image accepted, in pixels, checked before decoding (default 60000000)")
    p.add_argument("--max-images", type=positive_int, default=64, metavar="N", help="images per request (default 64)")
    p.add_argument("--max-batch", type=positive_int, default=32, metavar="N",
                   help="images per model call when requests are batched (default 32)")
    p.add_argument("--max-delay-ms", type=float, default=5.0, metavar="MS",
                   help="how long a request waits for others to join its batch (default 5)")
    p.add_argument("--top-k", type=positive_int, default=3, metavar="K", help="default of ?top_k (default 3)")
    p.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug"), default="info",
                   help="uvicorn's log level (default info: one line per request)")
    p.set_defaults(func=run)


def _check_port(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, not {port}.")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise UsageError(f"--host {host} is not an address this machine can listen on ({err.strerror}).") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as err:
            raise UsageError(
                f"Cannot listen on {host}:{port} ({err.strerror or err}). Another program may use the port: choose "
                f"another with --port, or stop it.") from None


def run(args) -> int:
    from automodel.outputs.bestmodel import load_best
    from automodel.outputs.servemodel import check_installed

    check_installed()  # before anything else: the fix is an install
    if args.max_delay_ms < 0:
        raise UsageError(f"--max-delay-ms cannot be negative, got {args.max_delay_ms}.")
    load_best(args.run_dir)  # a run without a model: say so before anything is started
    _check_port(args.host, args.port)

    import uvicorn

    from automodel.outputs.serve import ENV, ServeConfig, create_app, worker_env
    from automodel.outputs.servemodel import estimate_images, load_served, measure

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = args.threads if args.threads > 0 else max(1, cores // args.workers)

    def note(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    served = load_served(args.run_dir, threads, note=note)
    estimate = measure(served, estimate_images(served))
    for line in estimate.lines():
        note(line)
    if args.workers > 1:
        note(f"  with --workers {args.workers}: about {args.workers} x that memory")
    cfg = ServeConfig(str(served.run), args.host, args.port, threads, args.max_upload_mb, args.max_pixels,
                      args.max_images, args.max_batch, args.max_delay_ms, args.top_k)
    url = f"http://{args.host}:{args.port}"
    note(f"automodel: serving iteration {served.iteration} of {served.run} at {url} (API docs: {url}/docs); "
         f"Ctrl-C stops it.")
    try:
        if args.workers == 1:
            uvicorn.run(create_app(served, estimate, cfg), host=args.host, port=args.port, log_level=args.log_level)
        else:
            os.environ[ENV] = worker_env(cfg, estimate)
            del served
            uvicorn.run("automodel.outputs.serve:app_from_env", factory=True, workers=args.workers, host=args.host,
                        port=args.port, log_level=args.log_level)
    except KeyboardInterrupt:
        pass
    note("automodel: server stopped.")
    return 0
