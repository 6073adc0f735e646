"""`automodel datasets list|show|fetch`: the benchmark dataset registry (automodel/datasets/datasets.yaml).

automodel datasets list [--json]
automodel datasets show NAME [--json]
automodel datasets fetch NAME DIR [--per-class N] [--train-per-class N] [--layout imagefolder|flat|csv]
                                  [--seed K] [--source PATH] [--force]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from automodel.datasets.fetch import LAYOUTS, fetch, how_to_obtain, iter_summary
from automodel.datasets.registry import DatasetEntry, Registry, load_registry, shared_dir
from automodel.errors import AutomodelError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "datasets",
        help="list the benchmark datasets and write one as an image folder",
        description="The registry of benchmark datasets: the paper's sets (network) and the offline ones (local).",
    )
    sub = parser.add_subparsers(dest="datasets_command", metavar="SUBCOMMAND")

    p_list = sub.add_parser("list", help="show every dataset: classes, source, local/network, published final accuracy")
    p_list.add_argument("--json", action="store_true", help="print the entries as JSON")
    p_list.set_defaults(func=_list)

    p_show = sub.add_parser("show", help="everything the registry says about one dataset, and how to obtain it")
    p_show.add_argument("name")
    p_show.add_argument("--json", action="store_true", help="print the entry as JSON")
    p_show.set_defaults(func=_show)

    p_fetch = sub.add_parser(
        "fetch",
        help="write a dataset as a folder `automodel fit` reads",
        description="Write a dataset as an image folder. Local sets are written offline; network sets are read from "
        "--source (what you downloaded) or downloaded when the network is there.",
    )
    p_fetch.add_argument("name", help="a name from `automodel datasets list`")
    p_fetch.add_argument("dir", help="the folder to write (new or empty)")
    p_fetch.add_argument(
        "--per-class", type=int, default=None, metavar="N", help="keep the first N images of every class in every split"
    )
    p_fetch.add_argument(
        "--train-per-class",
        type=int,
        default=None,
        metavar="N",
        help="keep the first N images of every class in the training split only (imagefolder layout)",
    )
    p_fetch.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="imagefolder",
        help="imagefolder: DIR/{train,test}/<class>/ (default); flat: DIR/<class>/; csv: DIR/images/ + DIR/labels.csv",
    )
    p_fetch.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the 80/20 split where the set has no test split (default: the registry's)",
    )
    p_fetch.add_argument(
        "--source", default=None, metavar="PATH", help="the folder or archive you downloaded (network sets)"
    )
    p_fetch.add_argument("--force", action="store_true", help="replace DIR if it is not empty")
    p_fetch.set_defaults(func=_fetch)

    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _source_text(entry: DatasetEntry) -> str:
    src = entry.source
    if src.type == "kaggle":
        return f"kaggle {src.kaggle_kind}: {src.kaggle_slug}"
    if src.type == "torchvision" and src.torchvision:
        return src.torchvision.split("(")[0]
    if src.type == "url":
        host = src.files[0].url.split("/")[2] if src.files else (src.homepage or "url")
        return f"download: {host}"
    if src.type == "shared":
        return f"shared: {src.shared} (materialize.py)"
    return src.sklearn or src.type


def _where(entry: DatasetEntry, shared_ok: bool) -> str:
    if entry.kind == "network":
        return "network"
    if entry.kind == "shared" and not shared_ok:
        return "local (shared missing)"
    return "local"


def _list(args: argparse.Namespace) -> int:
    reg = load_registry()
    if args.json:
        print(json.dumps({name: _as_json(e) for name, e in reg.entries.items()}, indent=2))
        return 0
    try:
        shared_dir()
        shared_ok = True
    except AutomodelError:
        shared_ok = False
    header = ("name", "classes", "source", "where", "published final")
    rows = [
        (e.name, str(e.classes), _source_text(e), _where(e, shared_ok), _pct(e.published.final))
        for e in reg.entries.values()
    ]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print()
    _footer(reg, shared_ok)
    return 0


def _footer(reg: Registry, shared_ok: bool) -> None:
    if all(e.published.final is None for e in reg.entries.values()):
        print(f"Published numbers: {' '.join(str(reg.paper.get('numbers_note', 'not found offline')).split())}")
    if not shared_ok:
        print(
            "The shared sets need the shared datasets folder: set AUTOMODEL_SHARED or put shared/ beside the "
            "repository."
        )
    print(f"Registry: {reg.path}. Details: automodel datasets show NAME; write one: automodel datasets fetch NAME DIR")


def _as_json(entry: DatasetEntry) -> dict:
    data = asdict(entry)
    data["offline"] = entry.offline
    return data


def _show(args: argparse.Namespace) -> int:
    reg = load_registry()
    entry = reg.get(args.name)
    if args.json:
        print(json.dumps(_as_json(entry), indent=2))
        return 0
    src, pub = entry.source, entry.published
    lines = [
        f"{entry.name}: {entry.title}",
        f"  kind: {entry.kind}; classes: {entry.classes}; images: {entry.image}",
        "  counts: "
        + ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} unknown" for k, v in entry.images.items()),
        f"  split: {entry.split.rule} ({entry.split.text})",
        f"  source: {_source_text(entry)}" + (f"; {src.homepage}" if src.homepage else ""),
    ]
    for f in src.files:
        checksum = f"md5 {f.md5} ({f.checksum_source})" if f.md5 else "no published checksum"
        lines.append(f"    {f.url}: {checksum}")
    if src.about:
        lines.append(f"  about: {src.about}")
    for key in ("construction", "task"):
        if key in entry.extra:
            lines.append(f"  {key}: {' '.join(str(entry.extra[key]).split())}")
    if src.license:
        lines.append(f"  license: {src.license}")
    lines.append(
        f"  published: zero-shot {_pct(pub.zero_shot)}, first iteration {_pct(pub.first_iteration)}, final "
        f"{_pct(pub.final)}, "
        f"Kaggle top {_pct(pub.kaggle_top_accuracy)}, rank {pub.kaggle_rank or '-'}"
        + (f" ({pub.note})" if pub.note else "")
    )
    board = entry.extra.get("leaderboard")
    if board:
        lines.append(
            f"  Kaggle leaderboard top (private): {_pct(board.get('top_private_accuracy'))}; "
            f"{' '.join(str(board.get('source', '')).split())}"
        )
    if entry.kind == "network":
        lines.append(f"  obtain: {how_to_obtain(entry)}")
    print("\n".join(lines))
    return 0


def _fetch(args: argparse.Namespace) -> int:
    entry = load_registry().get(args.name)
    result = fetch(
        entry,
        args.dir,
        per_class=args.per_class,
        layout=args.layout,
        seed=args.seed,
        source=args.source,
        force=args.force,
        train_per_class=args.train_per_class,
    )
    for line in iter_summary(result):
        print(line)
    print(f"Next: automodel fit {result.dest}")
    return 0
