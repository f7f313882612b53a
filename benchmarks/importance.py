"""One-shot pruning of the default model, no recovery: every method × knowledge rule × ratio.

Each row prunes SmolLM2-135M with `lorashear prune` in a child process (its wall time and peak
memory are measured from the outside), then scores the exported folder: wiki perplexity (first
`--ppl-windows` windows, BOS + 511 text tokens each) and the seven zero-shot tasks (first
`--limit` documents). The dense model is row 0, scored the same way. Every finished part of every
row is written at once, so a stopped run resumes where it stopped (row by row: every part of a row
before the next row, so a session that ends mid-table leaves whole rows).

    PYTHONPATH=src python benchmarks/importance.py --workdir /tmp/importance [--ratios 0.2,0.5]
        [--methods random,magnitude,wanda-sp,taylor,flap] [--rules none,auto,fixed] [--parts ppl,tasks]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import RESULTS, command_line, machine_text, run_child, score
from render import importance_markdown, write_results

from lorashear.models import count_parameters, load_model

MODEL = "smollm2-135m"
PARTS = ("ppl", "tasks")


def row_key(ratio: float, method: str, rule: str) -> str:
    return f"{round(ratio * 100)}% {method} {rule}"


def prune_row(ratio: float, method: str, rule: str, out: Path, args: argparse.Namespace) -> dict:
    """`lorashear prune` in a child process: its command, wall time, peak RSS and what pruning.json says."""
    argv = ["prune", MODEL, "--method", method, "--ratio", str(ratio), "--unprunable", rule, "-o", str(out),
            "--overwrite"]
    child = run_child(["-m", "lorashear", *argv], out)
    record = json.loads((out / "pruning.json").read_text())
    knowledge = record.get("knowledge") or {}
    return {**child, "params": record["params_after"],
            "achieved_ratio": record["achieved_ratio"], "unprunable": knowledge.get("unprunable", [])}


def save(results: dict, stem: str) -> None:
    write_results(stem, results, importance_markdown(results))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="where the pruned folders go")
    parser.add_argument("--ratios", default="0.2,0.5")
    parser.add_argument("--methods", default="random,magnitude,wanda-sp,taylor,flap")
    parser.add_argument("--rules", default="none,auto,fixed")
    parser.add_argument("--parts", default="ppl,tasks")
    parser.add_argument("--ppl-windows", type=int, default=128)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--stem", default="importance_smollm2")
    args = parser.parse_args()
    path = RESULTS / f"{args.stem}.json"
    results = json.loads(path.read_text()) if path.exists() else {"model": MODEL, "rows": {}}
    results.update(command=command_line(),
                   machine=machine_text(),
                   limit=args.limit)
    rows = [(float(r), m, u) for r in args.ratios.split(",") for u in args.rules.split(",")
            for m in args.methods.split(",") if not (m == "random" and u != "none")]
    dense = results["rows"].setdefault("dense", {})
    dense.setdefault("params", count_parameters(load_model(MODEL, device="cpu")))
    parts = args.parts.split(",")
    for part in parts:
        if part not in dense:
            dense[part] = score(MODEL, part, args)
            results["ppl_convention"] = dense.get("ppl", {}).get("convention", "")
            save(results, args.stem)
    # Row by row, every part of a row before the next: a session that ends mid-table leaves whole rows.
    for ratio, method, rule in rows:
        key = row_key(ratio, method, rule)
        row = results["rows"].setdefault(key, {})
        folder = args.workdir / key.replace("%", "").replace(" ", "-")
        for part in parts:
            if part in row:
                continue
            if "prune" not in row or not (folder / "config.json").is_file():
                print(f"[{key}] pruning", flush=True)
                row["prune"] = prune_row(ratio, method, rule, folder, args)
                save(results, args.stem)
            print(f"[{key}] scoring {part}", flush=True)
            row[part] = score(str(folder), part, args)
            save(results, args.stem)
            print(f"[{key}] {part}: {json.dumps(row[part])[:200]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
