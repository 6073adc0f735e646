"""`automodel weights fetch|list`: pretrained timm weights in your Hugging Face cache.

automodel weights fetch NAME...     download through timm and huggingface_hub (here, never in the sandbox)
automodel weights list [--json]     the timm weights the sandbox will find
"""

from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "weights",
        help="download pretrained timm weights into your Hugging Face cache, or list the cached ones",
        description="Pretrained weights for the Architect to fine-tune. Runs are offline: weights are fetched "
        "beforehand, into the Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub), "
        "which the sandbox reads read-only. HF_ENDPOINT selects a mirror.",
    )
    sub = parser.add_subparsers(dest="weights_command", metavar="SUBCOMMAND")
    p_fetch = sub.add_parser(
        "fetch",
        help="download timm weights (e.g. resnet18 or resnet18.a1_in1k) through timm and huggingface_hub",
        description="Download each NAME's weights with timm's own loader (huggingface_hub underneath) into the "
        "Hugging Face cache, and check that they load. An architecture name (resnet18) means its default weights.",
    )
    p_fetch.add_argument("names", nargs="+", metavar="NAME", help="timm weights or architecture names")
    p_fetch.set_defaults(func=_fetch)
    p_list = sub.add_parser("list", help="the timm weights in the Hugging Face cache")
    p_list.add_argument("--json", action="store_true", help="print them as JSON")
    p_list.set_defaults(func=_list)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _fetch(args) -> int:
    from automodel.weights import fetch

    for item in fetch(list(args.names)):
        print(item.text())
    return 0


def _list(args) -> int:
    from automodel.weights import find_cached, hub_cache_dir

    found = find_cached()
    if args.json:
        json.dump({"hub_cache": str(hub_cache_dir()), "names": list(found.names)}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not found.names:
        print(f"No timm weights in {hub_cache_dir()}. Download some with `automodel weights fetch resnet18`.")
        return 0
    print(f"timm weights in {found.hub_dir}:")
    for name in found.names:
        print(f"  {name}")
    return 0
