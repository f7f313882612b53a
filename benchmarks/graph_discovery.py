"""Group discovery on a real model (default: SmolLM2-135M): counts and parameters per kind, discovery time.

    PYTHONPATH=src python benchmarks/graph_discovery.py [--model smollm2-135m] [--repeats 2]

Writes benchmarks/results/graph_discovery.{json,md}. Times are wall-clock on CPU; the load
average is recorded next to them (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import time

from _common import machine
from render import write_results

from lorashear.graph import DEFAULT_KINDS, GROUP_KINDS, build_graph
from lorashear.graph.summary import kind_stats
from lorashear.models import DEFAULT_MODEL, load_model


def with_lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=8, target_modules="all-linear")).eval()


def timed(fn, repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(round(time.perf_counter() - start, 2))
    return times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    runs = {}
    for lora in (False, True):
        model = load_model(args.model, device="cpu")
        if lora:
            model = with_lora(model)
        label = "lora" if lora else "base"
        runs[label] = {"machine_before": machine()}
        for kinds_label, kinds in (("default_kinds", DEFAULT_KINDS), ("all_kinds", GROUP_KINDS)):
            times, graph = timed(lambda model=model, kinds=kinds: build_graph(model, kinds=kinds), args.repeats)
            runs[label][kinds_label] = {"seconds": times, "kinds": kind_stats(graph, kinds)}
            print(f"{args.model} {label} {kinds_label}: {min(times):.2f} s (runs {times}, load {os.getloadavg()[0]:.2f})")
        runs[label]["machine_after"] = machine()

    lines = [f"# Group discovery: {args.model}", "",
             "`PYTHONPATH=src python benchmarks/graph_discovery.py`", "",
             "| LoRA | kinds | seconds (runs) | load avg (1 min, before/after) |", "|---|---|---|---|"]
    for label, run in runs.items():
        for kinds_label in ("default_kinds", "all_kinds"):
            lines.append(f"| {label} | {kinds_label} | {run[kinds_label]['seconds']} | "
                         f"{run['machine_before']['load_average'][0]} / {run['machine_after']['load_average'][0]} |")
    for label, run in runs.items():
        lines += ["", f"## Groups per kind ({label})", "",
                  "| kind | groups | prunable | params/group | params (all groups) |", "|---|---|---|---|---|"]
        for kind, st in run["all_kinds"]["kinds"].items():
            per = st["params_per_group"]
            per = "-" if per is None else (str(per[0]) if per[0] == per[1] else f"{per[0]}-{per[1]}")
            lines.append(f"| {kind} | {st['groups']} | {st['prunable']} | {per} | {st['params']:,} |")
    lines += ["", "Parameters include LoRA factors when LoRA is attached (they are part of the group's slices).", ""]
    write_results("graph_discovery", {"model": args.model, "runs": runs}, "\n".join(lines))


if __name__ == "__main__":
    main()
