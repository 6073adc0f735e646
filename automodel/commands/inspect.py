"""`automodel inspect DATASET`: what automodel sees in a dataset folder, before any training."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from automodel.commands.fit import positive_int, seconds
from automodel.hardware import detect, resolve_device
from automodel.intake import load_dataset
from automodel.search.loop import FitConfig

_MAX_CLASS_ROWS = 30
_MAX_SKIPPED_ROWS = 10


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="show the layout, classes, splits and image statistics of a dataset folder",
        description="Read a dataset folder the way `automodel fit` will (layout, labels, unreadable files, "
                    "splits, image sizes and modes, duplicates) and report it. Reads no pixels twice: the "
                    "per-file metadata is cached.",
    )
    p.add_argument("dataset", help="dataset folder: train/<class>/..., <class>/..., or images + labels CSV")
    p.add_argument("--json", action="store_true", help="print the profile as JSON instead of text")
    p.add_argument("--describe", metavar="TEXT", default=None,
                   help="what the images show and what matters (default: description.txt or README.md in the folder)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split shown (default 0, as `fit` uses)")
    g = p.add_argument_group("budget for the feasibility check (as you would give them to fit)")
    g.add_argument("--iters", type=positive_int, default=FitConfig.iters, help="iterations (default %(default)s)")
    g.add_argument("--time-per-iter", type=seconds, default=FitConfig.time_per_iter, metavar="S",
                   help="training seconds per iteration (default %(default)s)")
    g.add_argument("--time-budget", type=seconds, metavar="S", help="seconds for the whole run (default: no limit)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where training would run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from automodel.commands.fit import budget_of
    from automodel.intake.feasibility import assess

    ds = load_dataset(args.dataset, describe=args.describe, progress=not args.json or sys.stderr.isatty())
    profile = ds.profile(ds.split(seed=args.seed))
    cfg = FitConfig(iters=args.iters, time_per_iter=args.time_per_iter, time_budget=args.time_budget,
                    device=resolve_device(args.device))
    hardware = detect(cfg.device)
    findings = assess(profile, hardware, budget_of(cfg))
    if args.json:
        out = {
            "root": str(ds.root),
            "layout": ds.layout,
            "num_classes": len(ds.classes),
            "classes": list(ds.classes),
            "splits": profile["splits"],
            "skipped": ds.skipped,
            "problems": profile["problems"],
            "description": ds.description,
            "fingerprint": ds.fingerprint,
            "profile": profile,
            "findings": [f.to_json() for f in findings],
            "budget": {"iters": cfg.iters, "time_per_iter": cfg.time_per_iter, "time_budget": cfg.time_budget,
                       "device": cfg.device, "cpu_cores": hardware.cpu_cores},
        }
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_profile(profile, ds.skipped, ds.description))
        sys.stdout.write(format_findings(findings, cfg, hardware.cpu_cores))
    return 0


def format_findings(findings: list, cfg: FitConfig, cores: int) -> str:
    where = "a GPU" if cfg.device == "cuda" else f"{cores} CPU core(s)"
    budget = f"{cfg.iters} x {cfg.time_per_iter:g} s" + (f", --time-budget {cfg.time_budget:g} s" if cfg.time_budget
                                                          else "")
    head = f"Feasible  for {budget} on {where}: "
    if not findings:
        return head + "no findings\n"
    blocking = sum(1 for f in findings if f.blocking)
    lines = [head + f"{len(findings)} finding(s)" + (f", {blocking} that make fit refuse to start without --force"
                                                     if blocking else "")]
    lines += [f"  {f.line()}" for f in findings]
    return "\n".join(lines) + "\n"


def format_profile(p: dict[str, Any], skipped: list[dict], description: str) -> str:
    lines = []
    details = p.get("layout_details") or {}
    where = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in details.items())
    lines.append(f"Dataset   {p['root']}")
    lines.append(f"Layout    {p['layout']}" + (f" ({where})" if where else ""))
    lines.append(f"Classes   {p['num_classes']}: {', '.join(p['classes'][:_MAX_CLASS_ROWS])}"
                 + (" ..." if p["num_classes"] > _MAX_CLASS_ROWS else ""))
    lines.append(f"Images    {p['num_images']} usable, {len(skipped)} skipped")
    s, src = p["splits"], p["split_source"]
    split_text = f"train {s['train']}, val {s['val']} ({src['val']}), test {s['test']} ({src['test']})"
    if s.get("predict"):
        split_text += f", predict {s['predict']} (unlabelled)"
    lines.append(f"Splits    {split_text}")
    lines.append("")
    cc = p["class_counts"]
    width = max([5] + [len(c) for c in p["classes"][:_MAX_CLASS_ROWS]])
    lines.append(f"  {'class':<{width}}  {'train':>6} {'val':>6} {'test':>6} {'all':>7}")
    for c in p["classes"][:_MAX_CLASS_ROWS]:
        lines.append(f"  {c:<{width}}  {cc['train'][c]:>6} {cc['val'][c]:>6} {cc['test'][c]:>6} {cc['all'][c]:>7}")
    if p["num_classes"] > _MAX_CLASS_ROWS:
        lines.append(f"  ... and {p['num_classes'] - _MAX_CLASS_ROWS} more classes (see --json)")
    lines.append("")
    ratio = p["imbalance_ratio"]
    lines.append(f"Imbalance max/min class count: {ratio if ratio is not None else 'n/a'}"
                 + ("  (strongly imbalanced)" if ratio and ratio >= 3 else ""))
    w, h = p["image_size"]["width"], p["image_size"]["height"]
    lines.append(f"Sizes     width {w['min']}..{w['max']} (median {w['median']}), height {h['min']}..{h['max']} "
                 f"(median {h['median']}); {p['distinct_sizes']} distinct size(s)")
    lines.append(f"Modes     {_counts(p['modes'])}; formats {_counts(p['formats'])}")
    work = p["working"]
    lines.append(f"Decoded   {work['image_size'][0]}x{work['image_size'][1]}, {work['channels']} channel(s)")
    d = p["duplicates"]
    if d["groups"]:
        lines.append(f"Duplicates {d['groups']} group(s) of identical files ({d['files']} files), "
                     f"{d['across_splits']} across splits, {d['conflicting_labels']} with conflicting labels")
        for ex in d["examples"][:3]:
            lines.append(f"  {' = '.join(ex['files'])}  [{', '.join(ex['splits'])}]")
    else:
        lines.append("Duplicates none")
    if skipped:
        lines.append(f"Skipped   {len(skipped)} file(s):")
        for item in skipped[:_MAX_SKIPPED_ROWS]:
            lines.append(f"  {item['path']}: {item['reason']}")
        if len(skipped) > _MAX_SKIPPED_ROWS:
            lines.append(f"  ... and {len(skipped) - _MAX_SKIPPED_ROWS} more (see --json)")
    for problem in p.get("problems", []):
        lines.append(f"Warning   {problem}")
    if description:
        first = description.strip().splitlines()[0]
        lines.append(
            f"Description {first[:100]}"
            + (" ..." if len(first) > 100 or len(description.strip().splitlines()) > 1 else "")
        )
    else:
        lines.append("Description none (add --describe TEXT or a description.txt to help the agents)")
    return "\n".join(lines) + "\n"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k or '?'} {v}" for k, v in counts.items())
