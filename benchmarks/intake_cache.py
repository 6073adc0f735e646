"""Benchmark: load_dataset + decode on the CIFAR-10 subset, cold (empty cache) vs cached.

    python benchmarks/intake_cache.py                 # all 20,000 JPEGs (train + test)
    python benchmarks/intake_cache.py --split train   # the 10,000 training JPEGs
    python benchmarks/intake_cache.py --per-class 500 # a quicker run

Materializes the shared CIFAR-10 subset as an image folder (or uses --dataset),
times a cold load + decode into an empty cache folder, then the cached path
(median of several runs in this process, plus one fresh interpreter, which
includes importing automodel). Prints the figures with the machine details and
appends a Markdown section to benchmarks/results/intake_cache.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL

from automodel.intake import load_dataset
from automodel.intake.parallel import worker_count

REPO = Path(__file__).resolve().parents[1]
MATERIALIZE = REPO.parent / "shared" / "tools" / "materialize.py"
RESULTS = REPO / "benchmarks" / "results" / "intake_cache.md"

WARM_CHILD = """
import sys, time
t0 = time.perf_counter()
from automodel.intake import load_dataset
t1 = time.perf_counter()
ds = load_dataset(sys.argv[1], cache_dir=sys.argv[2], progress=False)
images = ds.decode(cache_dir=sys.argv[2], progress=False)
assert images.from_cache
images.array[-1].sum()
t2 = time.perf_counter()
print(f"{t1 - t0:.4f} {t2 - t1:.4f}")
"""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, str]:
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": f"{os.cpu_count()} logical, {worker_count()} used for decoding",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        # Shared machines: other load makes every figure slower; the ratio is what to compare.
        "load average (1 min) at start": f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a",
    }


def timed_load(root: Path, cache: Path, resolution=None) -> tuple[float, float, object]:
    t0 = time.perf_counter()
    ds = load_dataset(root, cache_dir=cache, progress=False)
    t1 = time.perf_counter()
    images = ds.decode(resolution=resolution, cache_dir=cache, progress=False)
    np.asarray(images.array[-1]).sum()  # touch the data so a lazy load is not free
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, images


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, help="an existing dataset folder (default: materialize CIFAR-10)")
    p.add_argument("--per-class", type=int, default=None, help="images per class and split (default: all)")
    p.add_argument("--split", choices=["all", "train", "test"], default="all",
                   help="which CIFAR-10 split(s) to materialize: all = 20,000 JPEGs, train = 10,000")
    p.add_argument("--repeats", type=int, default=5, help="cached runs to take the median of")
    p.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to append to")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="automodel-bench-") as tmp:
        tmp = Path(tmp)
        root = args.dataset
        if root is None:
            root = tmp / "cifar10"
            cmd = [sys.executable, str(MATERIALIZE), "--dataset", "cifar10", "--layout", "imagefolder",
                   "--split", args.split, "--out", str(root)]
            if args.per_class:
                cmd += ["--per-class", str(args.per_class)]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        cache = tmp / "cache"
        cold_load, cold_decode, images = timed_load(root, cache)
        n = images.array.shape[0]
        warm = [timed_load(root, cache) for _ in range(args.repeats)]
        warm_load = statistics.median(w[0] for w in warm)
        warm_decode = statistics.median(w[1] for w in warm)
        assert all(w[2].from_cache for w in warm)
        child = subprocess.run([sys.executable, "-c", WARM_CHILD, str(root), str(cache)], check=True,
                               capture_output=True, text=True, cwd=REPO)
        child_import, child_total = (float(v) for v in child.stdout.split())

    cold, warmt = cold_load + cold_decode, warm_load + warm_decode
    info = machine()
    shape = "x".join(str(v) for v in images.array.shape)
    rows = [
        ("cold: load_dataset (scan + probe every file)", cold_load),
        ("cold: decode (all cores) + write cache", cold_decode),
        ("cold total", cold),
        (f"cached: load_dataset (median of {args.repeats})", warm_load),
        (f"cached: decode = np.load mmap (median of {args.repeats})", warm_decode),
        ("cached total", warmt),
        ("cached total in a fresh interpreter (excl. import)", child_total),
        ("import automodel.intake in a fresh interpreter", child_import),
    ]
    print(f"intake cache benchmark: {n} images from {root.name} -> uint8 {shape}")
    for k, v in info.items():
        print(f"  {k}: {v}")
    for label, secs in rows:
        print(f"  {label:55s} {secs:8.3f} s")
    print(f"  cold / cached: {cold / warmt:.0f}x")

    args.results.parent.mkdir(parents=True, exist_ok=True)
    new = not args.results.exists()
    with open(args.results, "a", encoding="utf-8") as fh:
        if new:
            fh.write("# Intake: cold vs cached load_dataset + decode\n\nWritten by `benchmarks/intake_cache.py`.\n")
        fh.write(f"\n## {time.strftime('%Y-%m-%d %H:%M')}: {n} CIFAR-10 JPEGs -> uint8 {shape}\n\n")
        fh.write("\n".join(f"- {k}: {v}" for k, v in info.items()) + "\n\n")
        fh.write("| step | seconds |\n|---|---:|\n")
        fh.write("".join(f"| {label} | {secs:.3f} |\n" for label, secs in rows))
        fh.write(f"\ncold / cached: **{cold / warmt:.0f}x**\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
