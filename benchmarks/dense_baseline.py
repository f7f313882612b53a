"""Dense baseline of the default model: wiki PPL (128 × 512-token windows), the seven zero-shot
tasks (first 200 docs each) and speed; writes benchmarks/results/dense_<name>.json and .md.

    PYTHONPATH=src python benchmarks/dense_baseline.py [--model smollm2-135m] [--limit 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lorashear.evaluate import EvalConfig, evaluate_config, write_json
from lorashear.evaluate.files import write_atomic
from lorashear.models import load_model, load_tokenizer

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--name", default="smollm2", help="results file stem: dense_<name>")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--ppl-windows", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    config = EvalConfig(ppl_windows=args.ppl_windows, limit=args.limit, speed=True, batch_size=args.batch_size)
    start = time.time()
    result = evaluate_config(load_model(args.model), load_tokenizer(args.model), config, model_name=args.model)
    result.settings["wall_seconds"] = round(time.time() - start, 1)
    command = "PYTHONPATH=src python benchmarks/dense_baseline.py " + " ".join(sys.argv[1:])
    result.settings["command"] = command.strip()
    write_json(result, RESULTS / f"dense_{args.name}.json")
    table = result.to_markdown()
    write_atomic(RESULTS / f"dense_{args.name}.md",
                 f"# Dense baseline: {args.model}\n\n{table}\nCommand: `{command.strip()}` "
                 f"({result.settings['wall_seconds']} s)\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
