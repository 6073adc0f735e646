"""Benchmark: `automodel serve` over real HTTP for a Fashion-MNIST run.

    python benchmarks/serve.py                      # ~4 min on 2 cores (the run is reused when it exists)
    python benchmarks/serve.py --seconds 10 --rounds 5

Writes a Fashion-MNIST folder with `automodel datasets fetch` (200 training
images per class), trains a run with `automodel fit` (expert, 2 iterations of
30 s), starts `automodel serve` on it (which exports to ONNX in the sandbox
first), and measures from a client in this process, over HTTP with one
keep-alive connection per client thread, on the run's held-out test images:

- batch 1: one image per request, one client: latency per request (= per image);
- batch 32: 32 images per request, one client: latency per request and per image;
- concurrent: one image per request from 8 client threads at once, which the
  server batches: throughput, latency, and the mean batch the server formed;
- the server's memory: resident (VmRSS) and peak (VmHWM) from /proc.

The phases are interleaved over --rounds so all see the same machine load;
CPU steal is recorded for each. The client shares the machine's cores with the
server. Results go to benchmarks/results/serve.md with machine details, beside
the server's own start-up estimate (model only, no HTTP) from GET /info.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from common import RUNS_DIR, ensure_run, machine_details, machine_markdown, markdown_table, run_cli, write_text  # noqa

from automodel.outputs.bestmodel import HeldOut  # noqa: E402
from automodel.testing.serve_client import ServeClient, ServeProcess, multipart  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "serve.md"
WORK = RUNS_DIR / "serve"
THREADS = 8


def cpu_times() -> tuple[int, int]:
    """(total, steal) jiffies of all CPUs."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields), (fields[7] if len(fields) > 7 else 0)


def proc_memory(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(line.split()[1]) / 1024, 1)
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


class Phase:
    """One measured phase: request latencies (s), images sent, wall seconds and CPU steal."""

    def __init__(self, name: str, batch: int):
        self.name, self.batch = name, batch
        self.latencies: list[float] = []
        self.images = 0
        self.wall = 0.0
        self.steal: list[float] = []
        self.mean_batch: list[float] = []

    def add(self, latencies: list[float], images: int, wall: float, steal: float) -> None:
        self.latencies += latencies
        self.images += images
        self.wall += wall
        self.steal.append(steal)

    def row(self) -> list[str]:
        per_image = [x * 1000 / self.batch for x in self.latencies]
        per_request = [x * 1000 for x in self.latencies]
        return [
            self.name,
            str(len(self.latencies)),
            f"{pct(per_request, 0.5):.2f} / {pct(per_request, 0.95):.2f}",
            f"{pct(per_image, 0.5):.3f} / {pct(per_image, 0.95):.3f}",
            f"{self.images / self.wall:,.0f}",
            f"{statistics.fmean(self.mean_batch):.1f}" if self.mean_batch else "-",
            f"{max(self.steal):.0%}",
        ]


def run_phase(server: ServeProcess, bodies: list[tuple[bytes, str]], batch: int, threads: int,
              seconds: float) -> tuple[list[float], int, float]:
    """Send the bodies round-robin from `threads` clients for `seconds`; all must answer 200."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    failures: list[str] = []
    stop = time.perf_counter() + seconds

    def client(k: int) -> None:
        c = server.client()
        i = k
        while time.perf_counter() < stop:
            body, ctype = bodies[i % len(bodies)]
            t = time.perf_counter()
            status, reply = c.request("POST", "/predict", body, {"Content-Type": ctype})
            latencies[k].append(time.perf_counter() - t)
            if status != 200:
                failures.append(f"{status}: {reply}")
                break
            i += threads
        c.close()

    start = time.perf_counter()
    workers = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"the server refused a request: {failures[0]}")
    flat = [x for per in latencies for x in per]
    return flat, len(flat) * batch, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--time-per-iter", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=5.0, help="per phase and round (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the phases (default 3)")
    args = parser.parse_args()

    data = WORK / "fashion-mnist"
    if not data.exists():
        res = run_cli(["datasets", "fetch", "fashion-mnist", data, "--train-per-class", args.train_per_class])
        if not res.ok:
            print(res.error_tail(), file=sys.stderr)
            return 1
    run = ensure_run(data, WORK / "ws", f"fmnist-{args.train_per_class}", args.iters,
                     ["--time-per-iter", args.time_per_iter, "--agent", "expert", "--device", "cpu"],
                     log=WORK / "fit.log")
    if run.error:
        print(run.error, file=sys.stderr)
        return 1
    images = [p.read_bytes() for p in HeldOut.load(run.run_dir).paths("test")]
    singles = [multipart([(f"{i}.png", img)]) for i, img in enumerate(images[:512])]
    batches = [multipart([(f"{j}.png", img) for j, img in enumerate(images[i:i + 32])])
               for i in range(0, min(len(images), 32 * 64) - 31, 32)]
    phases = {"batch 1, 1 client": Phase("batch 1, 1 client", 1),
              "batch 32, 1 client": Phase("batch 32, 1 client", 32),
              f"batch 1, {THREADS} clients": Phase(f"batch 1, {THREADS} clients", 1)}

    started = time.perf_counter()
    with ServeProcess(run.run_dir, WORK / "server") as server:
        ready = time.perf_counter() - started
        exported = "exporting it in the sandbox" in server.stderr()
        info = ServeClient("127.0.0.1", server.port).get("/info")[1]
        memory_start = proc_memory(server.proc.pid)
        for _ in range(args.rounds):
            for phase, bodies, threads in ((phases["batch 1, 1 client"], singles, 1),
                                           (phases["batch 32, 1 client"], batches, 1),
                                           (phases[f"batch 1, {THREADS} clients"], singles, THREADS)):
                before = ServeClient("127.0.0.1", server.port).get("/info")[1]["batching"]
                total0, steal0 = cpu_times()
                latencies, sent, wall = run_phase(server, bodies, phase.batch, threads, args.seconds)
                total1, steal1 = cpu_times()
                after = ServeClient("127.0.0.1", server.port).get("/info")[1]["batching"]
                phase.add(latencies, sent, wall, (steal1 - steal0) / max(1, total1 - total0))
                calls = after["batches"] - before["batches"]
                phase.mean_batch.append((after["images"] - before["images"]) / calls if calls else 0.0)
        memory_end = proc_memory(server.proc.pid)
    if server.returncode != 0:
        print(f"the server did not stop cleanly: exit {server.returncode}", file=sys.stderr)

    est = {b["batch"]: b for b in info["estimate"]["batches"]}
    best = info["scores"]
    lines = [
        "# Serving: `automodel serve` over HTTP, Fashion-MNIST run",
        "",
        f"Run: Fashion-MNIST, {args.train_per_class} training images per class, `fit --agent expert --iters "
        f"{args.iters} --time-per-iter {args.time_per_iter:g} --device cpu`; best iteration {best['iteration']}, "
        f"validation accuracy {best['val_accuracy']:.4f}, test accuracy {best['test_accuracy']:.4f}. Served from its "
        f"ONNX export ({info['estimate']['runtime']}, {info['estimate']['threads']} thread(s)), 1 worker, default "
        f"batching (up to {info['batching']['max_batch']} images, {info['batching']['max_delay_ms']:g} ms). Requests "
        f"carry the run's {len(images)} held-out PNGs (28x28) as multipart uploads; the client (Python http.client, "
        f"keep-alive) runs on the same machine and shares its cores. {args.rounds} interleaved rounds of "
        f"{args.seconds:g} s per phase. Start-up ("
        + ("ONNX export in the sandbox, " if exported else "the run's ONNX export already there; ")
        + f"load, estimate) took {ready:.1f} s.",
        "",
        "Over HTTP (latency includes upload, decoding, preprocessing, inference and the JSON answer):",
        "",
        markdown_table(["phase", "requests", "ms per request p50 / p95", "ms per image p50 / p95", "images/s",
                        "mean batch formed", "max CPU steal"], [p.row() for p in phases.values()]),
        "",
        "The server's own estimate at start (model only, decoded images, no HTTP), as printed and in GET /info:",
        "",
        markdown_table(["batch", "ms per image p50 / p95", "images/s"],
                       [[b, f"{est[b]['p50_ms_per_image']:.3f} / {est[b]['p95_ms_per_image']:.3f}",
                         f"{est[b]['images_per_s']:,.0f}"] for b in sorted(est)]),
        "",
        f"Server memory: {memory_start.get('VmRSS')} MB resident after start, {memory_end.get('VmRSS')} MB after the "
        f"benchmark, peak {memory_end.get('VmHWM')} MB (VmHWM; the start-up estimate said "
        f"{info['estimate']['rss_mb']:.0f} MB).",
        "",
        machine_markdown(machine_details()),
        "",
        f"Command: `python benchmarks/serve.py --seconds {args.seconds:g} --rounds {args.rounds}`",
        "",
    ]
    write_text(RESULTS, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
