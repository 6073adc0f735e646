"""The harness's data path against a plain PyTorch loop feeding the same network from the same tensors.

Both train the expert's first CIFAR-10 network (rendered by the built-in
Architect, WIDTH from the table so both get the same one) with the same
optimizer step, on 2 threads, in this process:

- harness: the sandbox child's TrainData.loader over data.py's batched
  transforms (gather by index, random translation and flip, normalisation),
  exactly as train.py sees it;
- plain: a hand-written loop over the same uint8 tensor: a random
  permutation, a gather, float and normalise; no augmentation at all, so it is
  the fastest a loop can feed this network.

They alternate (A B A B ...) for `--rounds` rounds of `--seconds` each, and the
table gives images/s of each and the ratio per pair. `--precision bf16` runs
both steps under bfloat16 autocast, as the expert's train.py does where the
throughput probe measured it faster: the network is then cheaper, so the data
path weighs more.

    python benchmarks/data_path.py --rounds 3 --seconds 10 --precision bf16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "automodel" / "sandbox"))  # the child's modules import each other by name

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import git_commit, machine_details, machine_markdown, markdown_table, write_text  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def pipeline_modules(info, folder: Path):
    """The expert's first pipeline for 32x32 colour images with 10 classes, as importable modules."""
    import importlib.util

    from automodel.agents.expert.architect import write_pipeline
    from automodel.core import Brief, Hardware

    profile = {"num_classes": 10, "class_names": [str(i) for i in range(10)], "channels": 3,
               "image_size": {"min": [32, 32], "median": [32, 32], "max": [32, 32]}, "splits": {"train": 8000}}
    brief = Brief(profile=profile, info=vars(info), description="", time_per_iter=60.0,
                  hardware=Hardware(cpu_cores=2, device="cpu"))
    pipeline = write_pipeline(brief)
    folder.mkdir(parents=True, exist_ok=True)
    mods = {}
    for name in ("data", "model", "train"):
        (folder / f"{name}.py").write_text(pipeline.module(name))
        spec = importlib.util.spec_from_file_location(f"bench_{name}", folder / f"{name}.py")
        mods[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mods[name])
    return mods


def step_fn(model, opt, bf16: bool):
    def step(x, y):
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def harness(mods, info, images, labels, seconds: float, batch: int, bf16: bool) -> float:
    import child_data

    transforms = child_data.Transforms(*mods["data"].build_batch_transforms(info), batched=True)
    data = child_data.TrainData(torch, images, labels, transforms, None, info, 0, torch.device("cpu"))
    model = mods["model"].build_model(info).to(memory_format=torch.channels_last).train()
    step = step_fn(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True), bf16)
    seen, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for x, y in data.loader(batch):
            step(x, y)
            seen += len(y)
            if time.perf_counter() - start >= seconds:
                break
    return seen / (time.perf_counter() - start)


def plain(mods, info, images, labels, seconds: float, batch: int, bf16: bool) -> float:
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    mean = torch.tensor(info.mean).view(1, -1, 1, 1) * 255
    std = torch.tensor(info.std).view(1, -1, 1, 1) * 255
    model = mods["model"].build_model(info).to(memory_format=torch.channels_last).train()
    step = step_fn(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True), bf16)
    seen, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        order = torch.randperm(len(y_all))
        for i in range(0, len(y_all) - batch + 1, batch):
            idx = order[i:i + batch]
            x = ((x_all[idx].permute(0, 3, 1, 2).float() - mean) / std).contiguous(memory_format=torch.channels_last)
            step(x, y_all[idx])
            seen += batch
            if time.perf_counter() - start >= seconds:
                break
    return seen / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="bf16: both steps under bfloat16 autocast (on a CPU with bf16 matrix units)")
    ap.add_argument("--out", default=str(RESULTS / "data_path.md"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8000, 32, 32, 3), dtype=np.uint8)  # the cost does not depend on the pixels
    labels = rng.integers(0, 10, 8000).astype(np.int64)
    from types import SimpleNamespace

    info = SimpleNamespace(num_classes=10, class_names=[str(i) for i in range(10)], channels=3, image_size=(32, 32),
                           mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26], num_train=8000, device="cpu",
                           pretrained_available=False)
    mods = pipeline_modules(info, REPO / "benchmarks" / "runs" / "data_path")
    rows, ratios = [], []
    bf16 = args.precision == "bf16"
    for r in range(args.rounds):
        a = harness(mods, info, images, labels, args.seconds, args.batch, bf16)
        b = plain(mods, info, images, labels, args.seconds, args.batch, bf16)
        ratios.append(a / b)
        rows.append([r + 1, f"{a:.0f}", f"{b:.0f}", f"{a / b:.2f}"])
        print(rows[-1], flush=True)
    details = {**machine_details(), "commit": git_commit()}
    from automodel.hparams import read_hparams

    width = read_hparams((REPO / "benchmarks" / "runs" / "data_path" / "model.py").read_text()).get("WIDTH")
    text = "\n\n".join([
        "# The harness's data path against a plain PyTorch loop",
        f"The expert's first CIFAR-10 network (WIDTH {width}), batch {args.batch}, 2 threads, {args.precision}, "
        f"{args.seconds:.0f} s per run, alternating harness / plain. The harness applies data.py's batched "
        "augmentation (random translation, flip) on top of what the plain loop does.",
        markdown_table(["round", "harness img/s", "plain img/s", "ratio"], rows),
        f"Median ratio harness / plain: {statistics.median(ratios):.2f}.",
        machine_markdown(details),
    ])
    write_text(Path(args.out), text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
