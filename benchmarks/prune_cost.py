"""Peak memory and time of the gradient-based pruners on the default model, same micro-batch.

LoRAPrune's claim: scoring groups from LoRA gradients needs about half the memory of LLM-Pruner's
full-weight Taylor gradients. Each row is one `lorashear prune` process (no knowledge analysis, so
only the method itself is measured), its wall time and peak RSS taken from the outside:
- `taylor`: one-shot, gradients of every full weight over the calibration batches;
- `loraprune`: LoRA training with LoRA-gradient scores and masks;
- `lhspg`: LoRA training with LHSPG's projections (default saliency: taylor, full-weight gradients of the
  calibration batches at each period's start); `lhspg-product`: the same with the LoRA-product saliency.
All use micro-batches of 4 × 256 tokens; the trained rows run `--tokens` (a few optimiser steps, not a
full run), and report their median training throughput from the step log (`lhspg-steps4`: also apart for the
steps inside its saliency windows, whose frozen weights take gradients, and the others). Rows are saved as they
finish.

    PYTHONPATH=src python benchmarks/prune_cost.py --workdir /tmp/prune-cost [--tokens 12288] [--rows taylor,loraprune,lhspg]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from _common import RESULTS, command_line, machine_text, run_child
from render import prune_cost_markdown, write_results

MODEL = "smollm2-135m"
BATCH = ["--batch-size", "4", "--seq-len", "256"]


# Trained rows: name -> (method, its extra flags). LHSPG's default saliency (taylor) takes full-weight
# gradients of the calibration batches at each period's start (`lhspg-s16`: of the first 16 samples only;
# `lhspg-steps4`: of the 4 training steps that end at each start, no calibration pass);
# `lhspg-product` scores from LoRA alone.
TRAINED = {"loraprune": ("loraprune", []), "lhspg": ("lhspg", []),
           "lhspg-s16": ("lhspg", ["--saliency-samples", "16"]),
           "lhspg-steps4": ("lhspg", ["--saliency-steps", "4"]),
           "lhspg-product": ("lhspg", ["--saliency", "lhspg"])}
ROWS = ("taylor", *TRAINED)


def row_args(name: str, tokens: int) -> list[str]:
    """The `lorashear prune` flags of a row (besides model, ratio, output)."""
    if name == "taylor":
        return ["--method", "taylor", *BATCH]
    method, extra = TRAINED[name]
    return ["--method", method, *extra, *BATCH, "--grad-accum", "1", "--tokens", str(tokens)]


def measure(name: str, args: argparse.Namespace) -> dict:
    """One `lorashear prune` child: command, wall seconds, peak RSS, training throughput (trained rows)."""
    out = args.workdir / name
    argv = ["prune", MODEL, "--ratio", "0.2", "--unprunable", "none", *row_args(name, args.tokens), "-o", str(out),
            "--overwrite"]
    row = {**run_child(["-m", "lorashear", *argv], out), "load_avg": round(os.getloadavg()[0], 1)}
    steps = out / TRAINED.get(name, (name,))[0] / "steps.jsonl"
    if steps.is_file():
        row.update(throughput([json.loads(line) for line in steps.read_text().splitlines() if line.strip()]))
    return row


def throughput(records: list[dict]) -> dict:
    """Median training tokens/s of a step log; with saliency windows also of the window steps and of the others
    (and how many steps were in windows)."""
    def median(rs: list[dict]) -> float:
        return round(statistics.median(r["tokens_per_s"] for r in rs), 1)

    out = {"train_tokens_per_s": median(records)}
    window = [r for r in records if r.get("saliency_window")]
    if window and len(window) < len(records):
        other = [r for r in records if not r.get("saliency_window")]
        out.update(window_steps=len(window), window_tokens_per_s=median(window), other_tokens_per_s=median(other))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--tokens", type=int, default=12288, help="training tokens of the trained rows (12 steps)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"of: {', '.join(ROWS)}")
    parser.add_argument("--stem", default="prune_cost_smollm2")
    args = parser.parse_args()
    path = RESULTS / f"{args.stem}.json"
    results = json.loads(path.read_text()) if path.exists() else {"model": MODEL, "rows": {}}
    results.update(command=command_line(),
                   machine=machine_text())
    for name in args.rows.split(","):
        if name not in results["rows"]:
            print(f"[{name}] lorashear prune", flush=True)
            results["rows"][name] = measure(name, args)
            write_results(args.stem, results, prune_cost_markdown(results))
            print(f"[{name}] {json.dumps(results['rows'][name])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
