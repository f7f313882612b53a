"""Every method side by side on the default model, before and after the same recovery.

Each row is `lorashear run recipes/lorashear-20.yaml` with its own overrides (method, knowledge
rule, ratio, recovery tokens), in a child process whose wall time and peak memory are measured
from the outside; the pipeline's own evaluation is switched off (`evaluate=null`) so that the
dense model is scored once, here, and not once per row. Then the row's pruned and recovered
folders are scored: wiki perplexity (first `--ppl-windows` windows, BOS + 511 text tokens) and the
seven zero-shot tasks (first `--limit` documents). Every finished part is written at once and the
pipeline itself resumes (`--resume`), so a stopped run continues where it stopped.

    PYTHONPATH=src python benchmarks/methods.py --workdir /tmp/methods [--rows lhspg-auto,taylor-auto]
        [--ratios 0.2,0.5] [--parts run,ppl,tasks]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from graph_discovery import machine_line, run_lorashear, write_results
from importance import score

from lorashear.models import count_parameters, load_model

RESULTS = Path(__file__).resolve().parent / "results"
RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "lorashear-20.yaml"
MODEL = "smollm2-135m"
PARTS = ("run", "ppl", "tasks")
MODELS = ("pruned", "recovered")  # the pipeline's 03-prune/model and 04-recover/model
# name -> (what it is, overrides of the base recipe). Every row: same calibration, recovery data and tokens.
ROWS = {
    "random": ("uniformly random groups, no analysis", ["prune.method=random", "knowledge=null"]),
    "taylor-auto": ("LLM-Pruner's Taylor, one shot, data-driven analysis", ["prune.method=taylor"]),
    "flap": ("FLAP (its own adaptive selection and bias compensation)", ["prune.method=flap", "knowledge=null"]),
    "wanda-sp-auto": ("Wanda-SP, one shot, data-driven analysis", ["prune.method=wanda-sp"]),
    "lhspg-auto": ("LoRAShear: LHSPG, data-driven analysis", []),
    "lhspg-fixed": ("LoRAShear: LHSPG, fixed rule (first 10% of layers, last layer)", ["knowledge.rule=fixed"]),
    "lhspg-fade": ("LHSPG, the authors' released multiplicative fade", ["prune.variant=fade"]),
    "loraprune-fixed": ("LoRAPrune (its released fixed rule)", ["prune.method=loraprune", "knowledge.rule=fixed"]),
    "taylor-auto-300k": ("Taylor + 300K recovery tokens: LHSPG's 200K training + 100K recovery",
                         ["prune.method=taylor", "recover.tokens=300000"]),
}


def row_key(ratio: float, name: str) -> str:
    return f"{round(ratio * 100)}% {name}"


def run_row(ratio: float, name: str, out: Path) -> dict:
    """`lorashear run` of the row's recipe in a child process (resumes a stopped run): command, seconds, peak RSS."""
    overrides = [*ROWS[name][1], f"prune.ratio={ratio}", "evaluate=null"]
    argv = ["run", str(RECIPE.relative_to(RECIPE.parent.parent)), *overrides, "-o", str(out), "--resume"]
    child = run_lorashear(argv, out, cwd=RECIPE.parent.parent)
    run_log = json.loads((out / "run.json").read_text())
    pruning = json.loads((out / "03-prune" / "model" / "pruning.json").read_text())
    knowledge = pruning.get("knowledge") or {}
    return {**child, "stage_seconds": {k: round(v, 1) for k, v in run_log["seconds"].items()},
            "params": pruning["params_after"],
            "achieved_ratio": pruning["achieved_ratio"], "unprunable": knowledge.get("unprunable", [])}


def fmt(value: float | None, scale: float = 1.0) -> str:
    return "" if value is None else f"{scale * value:,.2f}"


def markdown(results: dict) -> str:
    """One table: each row's PPL and task average before and after recovery, with the dense row first."""
    dense = results["rows"].get("dense", {})
    lines = [f"# Methods side by side on {results['model']}: pruned, then the same recovery", "",
             f"Command: `{results['command']}`", "",
             f"Machine: {results['machine']}. Base recipe: `recipes/lorashear-20.yaml` (each row's overrides in the "
             "JSON). PPL: wiki, 128 × 512 (BOS + 511 text tokens); 7-task average: first "
             f"{results['limit']} documents each (acc for boolq/winogrande, acc_norm for the rest). "
             "Pipeline s: the whole `lorashear run` (knowledge analysis, prune, recovery); peak RSS of that process.",
             "", "| ratio | row | params | wiki PPL pruned | wiki PPL recovered | 7-task pruned | 7-task recovered "
             "| pipeline s (prune / recover) | peak RSS MB | what |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---|",
             f"| 0% | dense | {dense.get('params', 0):,} | {fmt(dense.get('ppl', {}).get('ppl'))} | | "
             f"{fmt(dense.get('tasks', {}).get('avg'), 100)} | | | | the unpruned model |"]
    for key, row in results["rows"].items():
        if key == "dense":
            continue
        ratio, name = key.split(" ", 1)
        run = row.get("run", {})
        stages = run.get("stage_seconds", {})
        timing = f"{run['seconds']:,.0f} ({stages.get('prune', 0):,.0f} / {stages.get('recover', 0):,.0f})" if run else ""
        cells = [fmt(row.get(m, {}).get("ppl", {}).get("ppl")) for m in MODELS]
        cells += [fmt(row.get(m, {}).get("tasks", {}).get("avg"), 100) for m in MODELS]
        lines.append(f"| {ratio} | {name} | {run.get('params', 0):,} | {' | '.join(cells)} | {timing} | "
                     f"{run.get('peak_rss_mb', '')} | {ROWS.get(name, ('',))[0]} |")
    lines += ["", "Empty cells: not measured yet (the script resumes them)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="where each row's pipeline folder goes")
    parser.add_argument("--ratios", default="0.2")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"of: {', '.join(ROWS)}")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--ppl-windows", type=int, default=128)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--stem", default="methods_smollm2")
    args = parser.parse_args()
    unknown = sorted(set(args.rows.split(",")) - set(ROWS)) + sorted(set(args.parts.split(",")) - set(PARTS))
    if unknown:
        parser.error(f"unknown row(s)/part(s): {', '.join(unknown)}; rows: {', '.join(ROWS)}; parts: {', '.join(PARTS)}")
    path = RESULTS / f"{args.stem}.json"
    results = json.loads(path.read_text()) if path.exists() else {"model": MODEL, "rows": {}}
    results.update(command="PYTHONPATH=src python benchmarks/methods.py " + " ".join(sys.argv[1:]),
                   machine=machine_line(),
                   limit=args.limit)
    save = lambda: write_results(args.stem, results, markdown(results))  # noqa: E731
    dense = results["rows"].setdefault("dense", {})
    dense.setdefault("params", count_parameters(load_model(MODEL, device="cpu")))
    rows = [(float(r), name) for r in args.ratios.split(",") for name in args.rows.split(",")]
    for part in args.parts.split(","):
        if part != "run" and part not in dense:
            dense[part] = score(MODEL, part, args)
            save()
        for ratio, name in rows:
            key = row_key(ratio, name)
            row = results["rows"].setdefault(key, {"overrides": ROWS[name][1]})
            folder = args.workdir / key.replace("%", "").replace(" ", "-")
            if part == "run":
                if "run" not in row:
                    print(f"[{key}] lorashear run", flush=True)
                    row["run"] = run_row(ratio, name, folder)
                    save()
                continue
            for model in MODELS:
                if part in row.get(model, {}) or "run" not in row:
                    continue
                print(f"[{key}] scoring {model} {part}", flush=True)
                stage = "03-prune" if model == "pruned" else "04-recover"
                row.setdefault(model, {})[part] = score(str(folder / stage / "model"), part, args)
                save()
                print(f"[{key}] {model} {part}: {json.dumps(row[model][part])[:200]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
