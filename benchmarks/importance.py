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
import os
import sys
import time
from pathlib import Path

from graph_discovery import machine_text, run_child, write_results

from lorashear.evaluate import AVERAGE_METRIC, evaluate
from lorashear.models import count_parameters, load_model, load_tokenizer

RESULTS = Path(__file__).resolve().parent / "results"
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


def score(folder: str, part: str, args: argparse.Namespace) -> dict:
    """One part of a row's evaluation: `ppl` (wiki) or `tasks` (the seven, first --limit documents)."""
    model, tokenizer = load_model(folder, device="cpu"), load_tokenizer(folder)
    start = time.time()
    if part == "ppl":
        result = evaluate(model, tokenizer, ppl_windows=args.ppl_windows, tasks=())
        ppl = result.ppl["wiki"]
        out = {"ppl": ppl.ppl, "windows": ppl.windows, "convention": ppl.describe()}
    else:
        result = evaluate(model, tokenizer, ppl_corpora=(), tasks=tuple(AVERAGE_METRIC), limit=args.limit)
        out = {"avg": result.avg, "limit": args.limit,
               "tasks": {t: getattr(s, AVERAGE_METRIC[t]) for t, s in result.tasks.items()}}
    out["seconds"] = round(time.time() - start, 1)
    out["load_avg"] = round(os.getloadavg()[0], 1)
    return out


def average_without(tasks: dict | None, left_out: str = "boolq") -> float | None:
    """A scored row's task average with one task left out. boolq by default: on its first 200 documents the dense
    model scores 38.5, below the majority answer's rate, and pruned models drift to that answer (56-64), so the
    seven-task average rises as models get worse and cannot rank rows; the other six can."""
    if not tasks or "tasks" not in tasks:
        return None
    others = [v for task, v in tasks["tasks"].items() if task != left_out]
    return sum(others) / len(others) if others else None


def markdown(results: dict) -> str:
    """The results table (dense first), with the command and machine."""
    lines = [f"# One-shot pruning of {results['model']}, no recovery", "",
             f"Command: `{results['command']}`", "",
             f"Machine: {results['machine']}. PPL: wiki, {results.get('ppl_convention', '')}; "
             f"average of the seven tasks (first {results['limit']} documents each; acc for boolq/winogrande, "
             "acc_norm for the rest; without boolq: the other six, see `average_without`). Prune time and peak memory are of the whole `lorashear prune` process "
             "(load, calibration, knowledge analysis, scoring, compress, export).", "",
             "| ratio | method | unprunable rule | params | wiki PPL | 7-task avg | 6-task avg (no boolq) | prune s "
             "| peak RSS MB | unprunable clusters |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for key, row in results["rows"].items():
        ppl = row.get("ppl", {}).get("ppl")
        avg = row.get("tasks", {}).get("avg")
        six = average_without(row.get("tasks"))
        prune = row.get("prune", {})
        ratio, method, rule = (key.split(" ") + ["", ""])[:3] if key != "dense" else ("0%", "dense", "—")
        lines.append(
            f"| {ratio} | {method} | {rule} | {row.get('params', prune.get('params', 0)):,} | "
            f"{'' if ppl is None else f'{ppl:,.2f}'} | {'' if avg is None else f'{100 * avg:.2f}'} | "
            f"{'' if six is None else f'{100 * six:.2f}'} | "
            f"{prune.get('seconds', '')} | {prune.get('peak_rss_mb', '')} | "
            f"{', '.join(prune.get('unprunable', [])) or ('' if key == 'dense' else 'none')} |")
    lines.append("")
    lines.append("Empty cells: not measured yet (the script resumes them).")
    return "\n".join(lines) + "\n"


def save(results: dict, stem: str) -> None:
    write_results(stem, results, markdown(results))


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
    results.update(command="PYTHONPATH=src python benchmarks/importance.py " + " ".join(sys.argv[1:]),
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
