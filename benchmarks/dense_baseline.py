"""Dense baseline of the default model: wiki PPL (128 × 512-token windows), the seven zero-shot
tasks (first 200 docs each) and speed; writes benchmarks/results/dense_<name>.json and .md.

    PYTHONPATH=src python benchmarks/dense_baseline.py [--model smollm2-135m] [--limit 200] [--only ppl]

`--only ppl` re-measures the perplexity alone and keeps the other figures of the existing results
file; the JSON records, per part (ppl, tasks, speed), the command that measured it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from _common import DENSE_PARTS, RESULTS, command_line, dense_parts
from render import dense_markdown

from lorashear.evaluate import EvalConfig, EvalResult, evaluate_config, write_json
from lorashear.io import write_atomic
from lorashear.models import load_model, load_tokenizer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--name", default="smollm2", help="results file stem: dense_<name>")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--ppl-windows", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--only", choices=["ppl"], help="re-measure only this part; keep the others from the file")
    args = parser.parse_args()

    path = RESULTS / f"dense_{args.name}.json"
    if args.only:
        config = EvalConfig(ppl_windows=args.ppl_windows, tasks=(), batch_size=args.batch_size)
    else:
        config = EvalConfig(ppl_windows=args.ppl_windows, limit=args.limit, speed=True, batch_size=args.batch_size)
    start = time.time()
    result = evaluate_config(load_model(args.model), load_tokenizer(args.model), config, model_name=args.model)
    command = command_line()
    run = {"command": command, "wall_seconds": round(time.time() - start, 1)}
    if args.only:
        kept = EvalResult.from_dict(json.loads(path.read_text()))
        parts = {**dense_parts(kept.settings), "ppl": run}
        kept.settings = {k: v for k, v in kept.settings.items() if k not in ("command", "wall_seconds")}
        kept.settings.update(ppl_corpora=list(config.ppl_corpora), ppl_windows=config.ppl_windows)
        kept.ppl, result = result.ppl, kept
    else:
        parts = dict.fromkeys(DENSE_PARTS, run)
    result.settings["parts"] = parts
    write_json(result, path)
    report = dense_markdown(json.loads(path.read_text()))
    write_atomic(path.with_suffix(".md"), report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
