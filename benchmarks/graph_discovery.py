"""Discovery time and group counts of build_graph on a real model (default: SmolLM2-135M).

    PYTHONPATH=src python benchmarks/graph_discovery.py [--model smollm2-135m] [--lora]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

from lorashear.graph import GROUP_KINDS, build_graph
from lorashear.models import DEFAULT_MODEL, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--lora", action="store_true", help="attach peft LoRA (r=8, all linear layers)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    model = load_model(args.model)
    if args.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear")).eval()
    results = {}
    for label, kinds in (("default kinds", None), ("all kinds", GROUP_KINDS)):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            graph = build_graph(model) if kinds is None else build_graph(model, kinds=kinds)
            times.append(time.perf_counter() - start)
        counts = Counter(g.kind for g in graph.groups)
        prunable = Counter(g.kind for g in graph.groups if g.prunable)
        results[label] = {"seconds": [round(t, 2) for t in times], "groups": dict(counts), "prunable": dict(prunable)}
        print(f"{args.model} lora={args.lora} {label}: {min(times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)})")
        for kind, n in counts.items():
            print(f"  {kind:16s} {n:6d} groups, {prunable[kind]:6d} prunable")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
