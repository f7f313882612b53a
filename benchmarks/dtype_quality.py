"""The same model in float32 and in bfloat16 (or float16): wiki perplexity of each and the relative difference,
so that a run in a low-precision dtype is known to score what a float32 run scores.

    PYTHONPATH=src python benchmarks/dtype_quality.py [--model smollm2-135m] [--ppl-windows 16]
        [--dtypes float32,bfloat16]

Writes benchmarks/results/dtype_quality.{json,md} (resumable per dtype: a finished dtype is kept).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from _common import RESULTS, command_line, machine_text
from render import dtype_quality_markdown, write_results

from lorashear.evaluate import EvalConfig, evaluate_config
from lorashear.models import DEFAULT_MODEL, load_model, load_tokenizer

STEM = "dtype_quality"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--ppl-windows", type=int, default=16)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args()
    path = RESULTS / f"{STEM}.json"
    results = json.loads(path.read_text()) if path.exists() else {"rows": {}}
    if results.get("model", args.model) != args.model or results.get("ppl_windows", args.ppl_windows) != args.ppl_windows:
        results = {"rows": {}}  # other settings: measured again from scratch
    results.update(model=args.model, ppl_windows=args.ppl_windows, machine=machine_text(),
                   command=command_line())
    tokenizer = load_tokenizer(args.model)
    config = EvalConfig(ppl_corpora=("wiki",), ppl_windows=args.ppl_windows, tasks=())
    for dtype in args.dtypes.split(","):
        if dtype in results["rows"]:
            print(f"{dtype}: measured earlier, kept")
            continue
        start = time.time()
        result = evaluate_config(load_model(args.model, device="cpu", dtype=dtype), tokenizer, config,
                                 model_name=args.model)
        results["rows"][dtype] = {"ppl": result.ppl["wiki"].ppl, "seconds": round(time.time() - start, 1)}
        write_results(STEM, results, dtype_quality_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
