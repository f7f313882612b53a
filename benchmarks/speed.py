"""Speed of the dense default model vs its 20% / 50% pruned exports (uniform, plain HF folders).

    PYTHONPATH=src python benchmarks/speed.py [--model smollm2-135m] [--ratios 0.2 0.5]

Structure removal is what makes a pruned model faster; this measures it with `lorashear eval --speed`'s
code (prefill 512 tokens, greedy decode 128 tokens, batch 1, median of 3). The plan is `random`: speed
depends on the shapes, not on which groups were chosen. Writes benchmarks/results/speed_<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from lorashear.evaluate import measure_speed
from lorashear.evaluate.files import write_atomic
from lorashear.models import load_model
from lorashear.prune.api import PruneConfig, prune_model

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--name", default="smollm2")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.5])
    args = parser.parse_args()

    rows = [{"model": "dense", "ratio": 0.0, **measure_speed(load_model(args.model)).to_dict()}]
    with tempfile.TemporaryDirectory() as tmp:
        for ratio in args.ratios:
            folder = Path(tmp) / f"pruned-{ratio}"
            prune_model(PruneConfig(args.model, str(folder), ratio=ratio, uniform=True), log=lambda _: None)
            rows.append({"model": f"pruned {ratio:.0%} (uniform)", "ratio": ratio,
                         **measure_speed(load_model(str(folder))).to_dict()})
    command = "PYTHONPATH=src python benchmarks/speed.py " + " ".join(sys.argv[1:])
    payload = {"command": command.strip(), "load_average": os.getloadavg(), "rows": rows}
    write_atomic(RESULTS / f"speed_{args.name}.json", json.dumps(payload, indent=2) + "\n")
    dense = rows[0]
    lines = [f"# Speed: {args.model}, dense vs pruned ({rows[0]['device']})", "",
             f"Command: `{command.strip()}`; load average after: {os.getloadavg()[0]:.2f}", "",
             "| model | params | prefill tok/s | decode tok/s | prefill speed-up | decode speed-up | MACs/token |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params']:,} | {r['prefill_tokens_per_s']:.0f} | "
                     f"{r['decode_tokens_per_s']:.1f} | "
                     f"{r['prefill_tokens_per_s'] / dense['prefill_tokens_per_s']:.2f}× | "
                     f"{r['decode_tokens_per_s'] / dense['decode_tokens_per_s']:.2f}× | {r['macs_per_token']:,} |")
    write_atomic(RESULTS / f"speed_{args.name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
