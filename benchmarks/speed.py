"""Speed of the dense default model vs its pruned exports (uniform, plain HF folders), timed side by side.

    PYTHONPATH=src python benchmarks/speed.py [--model smollm2-135m] [--ratios 0.2 0.5] [--rounds 5] [--warmup 1]
                                              [--threads N]

Structure removal is what makes a pruned model faster; this measures it with `evaluate.compare`, the code behind
`lorashear eval A B --speed` and the demo: every model loaded at once and alternated within each round (prefill
512 tokens, greedy decode 128 new tokens, batch 1), ratios to dense paired by round (median, min–max), the
machine's load sampled every round. The plan is `random`: speed depends on the shapes, not on which groups were
chosen. `--threads` sets torch's thread count (default: torch's own): on cores shared with other jobs, threads
that outnumber the free cores spin against the other jobs, which slows every model and makes rounds noisy.
Writes benchmarks/results/speed_<name>.{json,md}; the .md is `render.speed_markdown()` of the .json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from _common import RESULTS
from render import speed_markdown

from lorashear.evaluate import compare
from lorashear.evaluate.speed import DEFAULT_ROUNDS, DEFAULT_WARMUP
from lorashear.io import write_atomic
from lorashear.models import load_model
from lorashear.prune.api import PruneConfig, prune_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--name", default="smollm2")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.5])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    models = {"dense": load_model(args.model)}
    with tempfile.TemporaryDirectory() as tmp:
        for ratio in args.ratios:
            folder = Path(tmp) / f"pruned-{ratio}"
            prune_model(PruneConfig(args.model, str(folder), ratio=ratio, uniform=True), log=lambda _: None)
            models[f"pruned {ratio:.0%}"] = load_model(str(folder))
        comparison = compare(models, rounds=args.rounds, warmup=args.warmup, log=print)
    niceness = os.nice(0)  # the command as run, priority included
    command = (f"nice -n {niceness} " if niceness else "") + "PYTHONPATH=src python benchmarks/speed.py"
    results = {"command": " ".join([command, *sys.argv[1:]]), "model": args.model,
               "comparison": comparison.to_dict()}
    write_atomic(RESULTS / f"speed_{args.name}.json", json.dumps(results, indent=2) + "\n")
    report = speed_markdown(results)
    write_atomic(RESULTS / f"speed_{args.name}.md", report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
