"""`lorashear analyze MODEL`: discover the model's minimally removable structures and summarize them."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lorashear.cli.options import add_dtype_arg
from lorashear.graph import build_graph
from lorashear.graph.summary import parse_kinds, summarize
from lorashear.models import load_skeleton


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="discover the groups (minimally removable structures) of a model",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description="""\
Discover the minimally removable structures (groups) of a model and summarize them per kind: groups,
prunable groups, parameters per group and in total; every unprunable group with its reason; the
discovery time. The model is built on the meta device: no weight is read. An adapter folder is traced
with its LoRA factors; --lora attaches a fresh r=8 adapter to a plain model first. The group kinds:
docs/design.md.""", epilog="""\
examples:

    lorashear analyze smollm2-135m
    lorashear analyze smollm2-135m --lora --kinds all --json graph.json
""")
    p.add_argument("model", help="built-in name, HF folder, peft adapter folder, .gguf file or hub id")
    p.add_argument("--lora", action="store_true", help="attach peft LoRA (r=8, all linear layers) first")
    p.add_argument("--kinds", default=None, metavar="LIST",
                   help="comma-separated group kinds (default: kv_group,mlp_channel; 'all' for every kind)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="write every group (its kind, layer and parameter slices) to this JSON file")
    add_dtype_arg(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    kinds = parse_kinds(args.kinds)
    model = load_skeleton(args.model, args.dtype, lora=args.lora)
    start = time.perf_counter()
    graph = build_graph(model, kinds=kinds)
    seconds = time.perf_counter() - start
    print(summarize(graph, kinds, seconds))
    if args.json is not None:
        target = args.json
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.tmp")  # written next to the target, renamed at the end
        graph.save(staging)
        staging.replace(target)
        print(f"groups written to {target}")
    return 0
