"""BENCHMARKS.md at the repository root: every benchmark table, rendered from the committed results JSONs.

Each section is its script's own `markdown()` of benchmarks/results/STEM.json (headings one level
down), under the command that produced it and the hardware it ran on. The side-by-side methods table
lists every planned row (each row of methods.py at 20% and 50%); rows not measured yet say `pending`.
Every benchmark's `write_results` rewrites it, and a test checks that it is what this script renders.

    PYTHONPATH=src python benchmarks/write_benchmarks_md.py [--results-md]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from graph_discovery import RESULTS

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "BENCHMARKS.md"
# (results stem, the script whose markdown() renders it, what the table answers), in reading order
SECTIONS = (
    ("methods_smollm2", "methods", "Every method side by side at 20% and 50%, before and after the same recovery"),
    ("importance_smollm2", "importance", "One-shot criteria and knowledge rules, no recovery"),
    ("prune_cost_smollm2", "prune_cost", "Peak memory and time of the gradient-based pruners (Taylor, LoRAPrune, LHSPG)"),
    ("memory_scale", "memory_scale", "Bytes per parameter of every stage on random LLaMA shapes (0.1-0.9B, fp32 and "
     "bf16), fitted and projected to 8B and 70B: does an 8B model fit a 24 GB card?"),
    ("dtype_quality", "dtype_quality", "The default model in float32 and in bfloat16: does a low-precision run score "
     "what a float32 run scores?"),
    ("recovery_smollm2_lhspg", "recovery", "Recovery variants (dynamic vs uniform mix, distillation) on an LHSPG-pruned "
     "model: where the mix can show (random plans drowned the comparison in noise)"),
    ("recovery_smollm2_300k", "recovery", "Three times the recovery tokens (300K, dynamic mix, the recipe's settings) on "
     "the best 20% pruned folder (LHSPG with Wanda-SP saliency): how far more recovery goes toward 1.5× dense"),
    ("recovery_smollm2", "recovery", "Recovery variants (dynamic vs uniform mix, distillation) on one random-pruned model"),
    ("dense_smollm2", "dense_baseline", "The dense model every table compares against"),
    ("speed_smollm2", "speed", "Speed of exported folders in PyTorch, dense vs pruned"),
    ("gguf_speed_smollm2", "gguf_speed", "Speed of the same models in llama.cpp (GGUF)"),
)
PLANNED_RATIOS = (0.2, 0.5)  # the methods table's ratios (recipes/lorashear-20.yaml and -50.yaml)
PLANNED_METHODS_COMMAND = ("PYTHONPATH=src python benchmarks/methods.py --workdir /tmp/methods --ratios 0.2,0.5 "
                           "--parts run,ppl,tasks,speed")


def methods_results(results: dict | None) -> dict:
    """The methods results with every planned row present (an empty row renders as pending)."""
    methods = importlib.import_module("methods")
    results = results or {"model": methods.MODEL, "command": PLANNED_METHODS_COMMAND + " (planned)",
                          "machine": "pending", "limit": 200, "rows": {"dense": {}}}
    rows = dict(results["rows"])
    for ratio in PLANNED_RATIOS:
        for name in methods.ALL_ROWS:
            rows.setdefault(methods.row_key(ratio, name), {})
    return {**results, "rows": rows}


def command_of(results: dict) -> str:
    """The command(s) that produced a results file (the dense baseline records one per part)."""
    if "command" in results:
        return f"`{results['command']}`"
    parts = results.get("settings", {}).get("parts", {})
    return "; ".join(f"{part}: `{run['command']}`" for part, run in parts.items()) or "not recorded"


def hardware_of(results: dict) -> str:
    """Where the results file says it ran (the scripts record it in different places)."""
    from lorashear.evaluate.speed import Machine

    if isinstance(results.get("machine"), str):
        return results["machine"]
    machine = results.get("comparison", {}).get("machine") or results.get("speed", {}).get("machine")
    if machine:
        return Machine.from_dict(machine).describe()
    rows = [row["machine"] for row in results.get("rows", {}).values() if "machine" in row]
    return "; ".join(dict.fromkeys(rows)) or "not recorded in its JSON"


def demoted(markdown: str) -> str:
    """Headings one level down, so BENCHMARKS.md keeps one title."""
    return "\n".join(f"#{line}" if line.startswith("#") else line for line in markdown.splitlines())


def section(stem: str, script: str, what: str) -> str:
    """The script's table under its own title, with what it answers, its command and its hardware."""
    path = RESULTS / f"{stem}.json"
    results = json.loads(path.read_text()) if path.is_file() else None
    if script == "methods":
        results = methods_results(results)
    if results is None:
        return f"## {what}\n\nPending: `benchmarks/results/{stem}.json` has not been written yet.\n"
    title, _, body = demoted(importlib.import_module(script).markdown(results)).partition("\n")
    return (f"{title}\n\n*{what}.* Produced by: {command_of(results)} → `benchmarks/results/{stem}.json`. "
            f"Hardware: {hardware_of(results)}.\n{body.rstrip()}\n")


def render() -> str:
    """BENCHMARKS.md's text from the committed results."""
    head = ["# Benchmarks", "",
            "Every table below is rendered by `PYTHONPATH=src python benchmarks/write_benchmarks_md.py` from the "
            "results JSON its section names; each section says which command measured it and on what hardware. "
            "The machines so far are shared CPUs (wall times and absolute tok/s carry their load; speed ratios are "
            "taken alternating in one window). Empty cells and `pending` rows are not measured yet.", ""]
    return "\n".join(head) + "\n".join(f"\n{section(*entry)}" for entry in SECTIONS)


def write() -> None:
    """BENCHMARKS.md from the results as they are now (every benchmark's `write_results` calls this)."""
    staging = OUTPUT.with_suffix(".md.partial")
    staging.write_text(render())
    staging.replace(OUTPUT)


def rerender_results() -> list[str]:
    """Each section's own benchmarks/results/STEM.md again from its JSON (after a script's markdown() changed)."""
    written = []
    for stem, script, _ in SECTIONS:
        path = RESULTS / f"{stem}.json"
        if path.is_file():
            path.with_suffix(".md").write_text(importlib.import_module(script).markdown(json.loads(path.read_text())))
            written.append(path.with_suffix(".md").name)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-md", action="store_true",
                        help="also rewrite each results/STEM.md from its JSON (after a script's markdown() changed)")
    if parser.parse_args().results_md:
        print(f"rewrote {', '.join(rerender_results())}")
    write()
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
