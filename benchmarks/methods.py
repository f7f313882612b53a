"""Every method side by side on the default model, before and after the same recovery.

Each row is `lorashear run recipes/lorashear-20.yaml` with its own overrides (method, knowledge
rule, ratio, recovery tokens), in a child process whose wall time and peak memory are measured
from the outside; the pipeline's own evaluation is switched off (`evaluate=null`) so that the
dense model is scored once, here, and not once per row. Then the row's pruned and recovered
folders are scored: wiki perplexity (first `--ppl-windows` windows, BOS + 511 text tokens) and the
seven zero-shot tasks (first `--limit` documents); the `speed` part times the pruned folder against
the dense model side by side (`lorashear.evaluate.speed.compare`, `--speed-rounds` rounds). Every
finished part is written at once and the pipeline itself resumes (`--resume`), so a stopped run
continues where it stopped. Rows whose knowledge analysis would be the same (same rule, probe criterion
and calibration) share it: a new row copies a finished one's analyze/knowledge stages. The external baseline (`torch-pruning`) runs its own script
(benchmarks/torch_pruning_baseline.py: TP's pruning, then the recipe's recovery) into the same layout.
At 50% (`--ratios 0.5`) every row is the recipe with prune.ratio=0.5, i.e. recipes/lorashear-50.yaml.
A row whose pipeline folders are gone (another session's workdir) runs again when a score is missing; for
its speed alone, its recipe runs again up to the prune stage (FOLDER-prune-only) and the cell is marked †.
`--seeds 0,1,2` runs each row once per seed of its pruning run (calibration draw; a trained method's data order
and LoRA init; recovery keeps its own seed): the recipe's seed (0) is the row as keyed without a seed, another
seed S is the row "RATIO NAME seed=S" in FOLDER-seedS, and rows run with several seeds get a mean ± sd table.

    PYTHONPATH=src python benchmarks/methods.py --workdir /tmp/methods [--rows lhspg-auto,taylor-auto]
        [--ratios 0.2,0.5] [--parts run,ppl,tasks,speed] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

from graph_discovery import machine_text, results_lock, run_child, write_results
from importance import average_without, score

from lorashear.evaluate import AVERAGE_METRIC
from lorashear.evaluate.estimate import TASK_SIZES
from lorashear.evaluate.files import write_atomic
from lorashear.models import count_parameters, load_model
from lorashear.pipeline.recipe import Recipe, load_recipe
from lorashear.pipeline.runner import RECIPE_FILE, finished_folder, stage_folder
from lorashear.pipeline.stages import MODEL_DIR, knowledge_enabled, knowledge_settings, plain
from lorashear.prune import METHODS
from lorashear.train.config import load_yaml

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "lorashear-20.yaml"
MODEL = "smollm2-135m"
TRAINED_CHECKPOINT_EVERY = 10  # optimiser steps (a trained method's 49K tokens: 48 steps of ~20 s on a CPU)
PARTS = ("run", "ppl", "tasks", "speed")
MODELS = {"pruned": "prune", "recovered": "recover"}  # scored model -> the pipeline stage that wrote it
# name -> (what it is, overrides of the base recipe). Every row: same calibration, recovery data and tokens.
ROWS = {
    "random": ("uniformly random groups, no analysis", ["prune.method=random", "knowledge=null"]),
    "taylor-auto": ("LLM-Pruner's Taylor, one shot, data-driven analysis", ["prune.method=taylor"]),
    "flap": ("FLAP (its own adaptive selection and bias compensation)", ["prune.method=flap", "knowledge=null"]),
    "wanda-sp-auto": ("Wanda-SP, one shot, data-driven analysis", ["prune.method=wanda-sp"]),
    "magnitude-auto": ("weight magnitude, one shot, data-driven analysis", ["prune.method=magnitude"]),
    "lhspg-auto": ("LoRAShear: LHSPG, data-driven analysis", []),
    "lhspg-product-slow": ("LHSPG with its first defaults: LoRA-product saliency, 49 steps of 16 x 256 at lr 2e-4",
                           ["prune.saliency=lhspg", "prune.tokens=200000", "prune.grad_accum=4", "prune.lr=2e-4"]),
    "lhspg-auto-s16": ("LHSPG, its Taylor saliency on the first 16 of the 64 calibration samples (a quarter of "
                       "the period-start cost)", ["prune.saliency_samples=16"]),
    "lhspg-fixed": ("LoRAShear: LHSPG, fixed rule (first 10% of layers, last layer)", ["knowledge.rule=fixed"]),
    "lhspg-fixed-steps4": ("LHSPG, fixed rule, its Taylor saliency from the weight gradients of the 4 training steps "
                           "that end at each period start (no calibration pass)",
                           ["knowledge.rule=fixed", "prune.saliency_steps=4"]),
    "lhspg-fade": ("LHSPG, the authors' released multiplicative fade", ["prune.variant=fade"]),
    "lhspg-wanda-sp": ("LHSPG with Wanda-SP as its saliency (the best one-shot choice after recovery at 20%), "
                       "data-driven analysis", ["prune.saliency=wanda-sp"]),
    "loraprune-fixed": ("LoRAPrune (its released fixed rule)", ["prune.method=loraprune", "knowledge.rule=fixed"]),
    "taylor-auto-150k": ("Taylor + 149K recovery tokens: LHSPG's 49K training + 100K recovery",
                         ["prune.method=taylor", "recover.tokens=149152"]),
    "wanda-sp-auto-150k": ("Wanda-SP + 149K recovery tokens: LHSPG's 49K training + 100K recovery",
                           ["prune.method=wanda-sp", "recover.tokens=149152"]),
    # LHSPG reads its channel multiple from its own option (`lorashear prune --multiple-of` sets it too);
    # the recipe's prune.multiple_of reaches the one-shot methods only.
    "lhspg-auto-m64": ("LoRAShear: LHSPG, kept MLP/hidden channels a multiple of 64 (widths llama.cpp runs fast)",
                       ["prune.group_divisible=64"]),
    "lhspg-wanda-sp-m64": ("LHSPG with Wanda-SP saliency, kept MLP/hidden channels a multiple of 64",
                           ["prune.saliency=wanda-sp", "prune.group_divisible=64"]),
}
# The pruning run's seed: the calibration draw (knowledge analysis, one-shot scores, LHSPG's saliency) and a
# trained method's data order and LoRA init. The base recipe sets none: every one is its dataclass's 0.
DEFAULT_SEED = 0
SEED_KEYS = ("calibration.seed", "prune.seed")  # recovery's own seed (recover.seed) stays the recipe's
# Rows that are not the recipe: an external package's own pruning, then the recipe's recovery (same layout).
BASELINES = {
    "torch-pruning": ("Torch-Pruning 1.6.1: its Taylor importance, uniform width (heads whole), our recovery",
                      "benchmarks/torch_pruning_baseline.py"),
}
ALL_ROWS = [*ROWS, *BASELINES]


def chance_average() -> float:
    """The 7-task average of guessing: 1 / answer choices per document of each task (TASK_SIZES, counted
    from lm-eval's own requests: 2 for boolq, piqa, winogrande, 4 for the rest), ≈ 0.357."""
    return sum(1 / TASK_SIZES[task].requests_per_doc for task in AVERAGE_METRIC) / len(AVERAGE_METRIC)


def margin_kept(avg: float | None, dense_avg: float | None) -> float | None:
    """(avg − chance) / (dense − chance): the share of the dense model's above-chance accuracy kept."""
    if avg is None or dense_avg is None:
        return None
    return (avg - chance_average()) / (dense_avg - chance_average())


def row_key(ratio: float, name: str, seed: int = DEFAULT_SEED) -> str:
    """"20% lhspg-auto" for the recipe's seed, "20% lhspg-auto seed=1" for another."""
    key = f"{round(ratio * 100)}% {name}"
    return key if seed == DEFAULT_SEED else f"{key} seed={seed}"


def split_key(key: str) -> tuple[str, str, int]:
    """A row key's (ratio text, row name, seed): the inverse of `row_key`."""
    ratio, rest = key.split(" ", 1)
    name, _, seed = rest.partition(" seed=")
    return ratio, name, int(seed) if seed else DEFAULT_SEED


def row_folder(workdir: Path, key: str) -> Path:
    """A row's pipeline folder: WORKDIR/20-lhspg-auto, WORKDIR/20-lhspg-auto-seed1."""
    return workdir / key.replace("%", "").replace(" seed=", "-seed").replace(" ", "-")


def seed_overrides(seed: int) -> list[str]:
    """The recipe overrides of a pruning seed; none for the recipe's own."""
    return [] if seed == DEFAULT_SEED else [f"{key}={seed}" for key in SEED_KEYS]


def exported(out: Path, model: str) -> Path:
    """A row's pruned or recovered folder: OUT/03-prune/model or OUT/04-recover/model."""
    return stage_folder(out, MODELS[model]) / MODEL_DIR


def row_argv(ratio: float, name: str, out: Path, prune_only: bool = False, seed: int = DEFAULT_SEED) -> list[str]:
    """The row's command line (after the interpreter): `lorashear run` of the recipe with the row's overrides
    (resuming a stopped run), or the baseline's script; both fill OUT/03-prune/model and OUT/04-recover/model
    (`prune_only`: the recipe's run up to OUT/03-prune/model)."""
    if name in BASELINES:
        return [BASELINES[name][1], "--ratio", str(ratio), "-o", str(out)]
    overrides = row_overrides(ratio, name, prune_only, seed)
    if METHODS[row_recipe(ratio, name, seed=seed).prune("OUT").method].trained:
        overrides.append(f"prune.checkpoint_every={TRAINED_CHECKPOINT_EVERY}")  # a stopped row resumes its training
    return ["-m", "lorashear", "run", str(RECIPE.relative_to(ROOT)), *overrides, "-o", str(out), "--resume"]


def row_overrides(ratio: float, name: str, prune_only: bool = False, seed: int = DEFAULT_SEED) -> list[str]:
    """The base recipe's overrides of a row: its own, its seed's, its ratio, and no pipeline evaluation (scored
    here); `prune_only`: no recovery either."""
    return [*ROWS[name][1], *seed_overrides(seed), f"prune.ratio={ratio}", "evaluate=null",
            *(["recover=null"] if prune_only else [])]


def row_recipe(ratio: float, name: str, prune_only: bool = False, seed: int = DEFAULT_SEED) -> Recipe:
    return load_recipe(RECIPE, row_overrides(ratio, name, prune_only, seed))


def share_analysis(ratio: float, name: str, out: Path, prune_only: bool = False,
                   seed: int = DEFAULT_SEED) -> str | None:
    """Before a new row starts: if another row of the workdir finished the same knowledge analysis (equal
    `knowledge_settings`: model, rule, probe criterion, calibration), copy its analyze and knowledge stages
    into OUT instead of probing again (deterministic: same settings, same verdict), and say so. Returns that row's folder."""
    if name in BASELINES or out.exists():
        return None
    recipe = row_recipe(ratio, name, prune_only, seed)
    if not knowledge_enabled(recipe):
        return None
    wanted = plain(knowledge_settings(recipe))
    for other in sorted(out.parent.glob("*/" + RECIPE_FILE)):
        if finished_folder(other.parent, "knowledge") is None or plain(knowledge_settings(Recipe(load_yaml(other.read_text())))) != wanted:
            continue
        for stage in ("analyze", "knowledge"):
            if finished_folder(other.parent, stage) is not None:
                shutil.copytree(stage_folder(other.parent, stage), stage_folder(out, stage))
        write_atomic(out / RECIPE_FILE, recipe.to_yaml())  # what `lorashear run` writes; --resume continues
        print(f"knowledge analysis: the same as row folder {other.parent.name}'s, copied from it", flush=True)
        return other.parent.name
    return None


def run_row(ratio: float, name: str, out: Path, seed: int = DEFAULT_SEED) -> dict:
    """The row's pipeline in a child process (its log passed through): command, seconds, peak RSS, what it pruned."""
    shared = share_analysis(ratio, name, out, seed=seed)
    child = run_child(row_argv(ratio, name, out, seed=seed), out, cwd=ROOT)
    run_log = json.loads((out / "run.json").read_text())
    pruning = json.loads((exported(out, "pruned") / "pruning.json").read_text())
    knowledge = pruning.get("knowledge") or {}
    return {**child, "knowledge_from": shared, "stage_seconds": {k: round(v, 1) for k, v in run_log["seconds"].items()},
            # a pipeline stopped and resumed: its seconds are the last invocation's (and resumed stages' last attempt)
            "invocations": len(run_log["invocations"]), "resumed_stages": run_log.get("resumed", []),
            "params": pruning["params_after"],
            "achieved_ratio": pruning["achieved_ratio"], "unprunable": knowledge.get("unprunable", [])}


def folder_to_time(ratio: float, name: str, folder: Path, seed: int = DEFAULT_SEED) -> tuple[Path, str | None]:
    """The row's pruned folder for the speed part, and None; or, when it is gone (another session's workdir),
    the pruned folder of the row's recipe run again up to its prune stage (`recover=null`) in FOLDER-prune-only,
    and that run's command: the same recipe prunes to the same widths up to the run-to-run spread, and the
    speed depends on the shapes only. A baseline's script has no prune-only run: it says so."""
    pruned = exported(folder, "pruned")
    if pruned.is_dir():
        return pruned, None
    if name in BASELINES:
        raise SystemExit(f"[{folder.name}] the pruned folder of {name} is gone and its script cannot stop after "
                         "pruning: run the row again in a new --workdir with --parts run,ppl,tasks,speed")
    again = folder.with_name(folder.name + "-prune-only")
    print(f"[{folder.name}] its pruned folder is gone: the row's recipe again, up to its prune stage, in {again.name}",
          flush=True)
    share_analysis(ratio, name, again, prune_only=True, seed=seed)
    argv = row_argv(ratio, name, again, prune_only=True, seed=seed)
    return exported(again, "pruned"), run_child(argv, again, cwd=ROOT)["command"]


def dense_score(part: str, args: argparse.Namespace) -> dict:
    """The dense model's score of a part: benchmarks/importance.py's when it scored it with the same settings
    (same function, windows and limit: the dense model does not change), else scored here."""
    importance = RESULTS / "importance_smollm2.json"
    earlier = json.loads(importance.read_text())["rows"].get("dense", {}).get(part) if importance.exists() else None
    same = earlier is not None and (earlier.get("limit") == args.limit if part == "tasks"
                                    else earlier.get("windows") == args.ppl_windows)
    return {**earlier, "copied_from": importance.name} if same else score(MODEL, part, args)


def missing_scores(row: dict, parts: list[str]) -> bool:
    """Whether any scoring part asked for (ppl, tasks, speed) is still missing from a row."""
    return any(part not in row.get(model, {}) for part in parts if part in ("ppl", "tasks") for model in MODELS) or (
        "speed" in parts and "speed" not in row)


def again_if_gone(row: dict, folder: Path, parts: list[str]) -> dict:
    """A row that ran but still misses a score asked for, whose folders are gone (another session's workdir):
    a fresh row that runs again, with what was measured kept beside it under "earlier"."""
    scores = [part for part in parts if part != "speed"]  # a gone row's speed: `folder_to_time` prunes again
    if "run" not in row or not missing_scores(row, scores) or exported(folder, "recovered").is_dir():
        return row
    print(f"[{folder.name}] its pipeline folders are gone: running the row again", flush=True)
    return {"overrides": row.get("overrides", []), "earlier": {k: v for k, v in row.items() if k != "overrides"}}


def stamped(record: dict, header: dict) -> dict:
    """A part's measurement with the benchmark command that made it (a row's parts may come from several runs)."""
    return {**record, "benchmark_command": header["command"]}


def merge_row(stem: str, header: dict, key: str | None = None, row: dict | None = None) -> dict:
    """Read the results file (under a lock), put this process's row into it, write it back; returns it.
    Several runs of this script (different --rows) can so fill one table side by side."""
    path = RESULTS / f"{stem}.json"
    with results_lock(stem):
        results = json.loads(path.read_text()) if path.exists() else {"model": MODEL, "rows": {}}
        if key is not None:
            results.update(header)
            results["rows"][key] = row  # each part names the run that measured it (`stamped`)
            write_results(stem, results, markdown(results))
        return results


def time_row(dense, folder: Path, rounds: int) -> dict:
    """The exported (pruned) folder timed against the dense model, alternating in one window: speed-ups
    (median and range over rounds), the machine and its warnings. The recovered folder has the same shapes."""
    from lorashear.evaluate.speed import compare

    pruned = load_model(str(folder), device="cpu")
    comparison = compare({"dense": dense, "pruned": pruned}, rounds=rounds)
    return {"rounds": rounds, "params": count_parameters(pruned),
            "prefill_vs_dense": asdict(comparison.ratio("pruned", "prefill")),
            "decode_vs_dense": asdict(comparison.ratio("pruned", "decode")),
            "machine": comparison.machine.describe(), "warnings": list(comparison.warnings),
            "comparison": comparison.to_dict()}


def fmt(value: float | None, scale: float = 1.0) -> str:
    return "" if value is None else f"{scale * value:,.2f}"


def count(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def speedup(row: dict, metric: str) -> str:
    spread = row.get("speed", {}).get(f"{metric}_vs_dense")
    if spread is None:
        return ""
    again = "†" if "pruned_again" in row["speed"] else ""  # a re-run's pruned folder (the scored one was gone)
    timed, scored = row["speed"].get("params"), row.get("run", {}).get("params")
    if again and None not in (timed, scored) and timed != scored:  # the re-run pruned to other widths: say by how much
        again += f" ({timed:,} params timed)"
    return f"{spread['median']:.2f}× ({spread['min']:.2f}–{spread['max']:.2f}){again}"


def markdown(results: dict) -> str:
    """One table: each row's PPL, task average and margin kept before and after recovery, the exported
    folder's speed-up, the pipeline's time and memory; the dense row first."""
    dense = results["rows"].get("dense", {})
    dense_avg = dense.get("tasks", {}).get("avg")
    lines = [f"# Methods side by side on {results['model']}: pruned, then the same recovery", "",
             f"Command of the latest run: `{results['command']}` (each part's own: its `benchmark_command` in the JSON)", "",
             f"Machine: {results['machine']}. Base recipe: `recipes/lorashear-20.yaml` (each row's overrides in the "
             "JSON). PPL: wiki, 128 × 512 (BOS + 511 text tokens); 7-task average: first "
             f"{results['limit']} documents each (acc for boolq/winogrande, acc_norm for the rest). Margin kept: "
             f"(avg − chance) / (dense − chance), chance = {100 * chance_average():.2f} (the mean over the seven tasks "
             "of 1 / answer choices: 2 for boolq, piqa, winogrande, 4 for the rest). Speed-up: the pruned folder "
             "against the dense model timed alternately in one window (prefill 512 tokens, decode 128 new tokens, "
             "batch 1): median (min–max) over rounds (the recovered folder has the same shapes). "
             "Pipeline s: the whole `lorashear run` (knowledge analysis, prune, recovery; a row whose analysis "
             "equals an earlier row's copies it and does not probe again); peak RSS of that process.",
             "", "| ratio | row | params | wiki PPL pruned | wiki PPL recovered | 7-task pruned | 7-task recovered "
             "| margin kept pruned / recovered | prefill × dense | decode × dense "
             "| pipeline s (prune / recover) | peak RSS MB | what |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
             f"| 0% | dense | {count(dense.get('params'))} | {fmt(dense.get('ppl', {}).get('ppl'))} | | "
             f"{fmt(dense_avg, 100)} | | | | | | | the unpruned model |"]
    for key, row in results["rows"].items():
        if key == "dense":
            continue
        ratio, name, seed = split_key(key)
        run = row.get("run", {})
        stages = run.get("stage_seconds", {})
        timing = f"{run['seconds']:,.0f} ({stages.get('prune', 0):,.0f} / {stages.get('recover', 0):,.0f})" if run else "pending"
        if run.get("knowledge_from"):
            timing += f", analysis copied from {run['knowledge_from']}"
        if run.get("invocations", 1) > 1:
            timing += f", the last of {run['invocations']} invocations only"
        if run.get("resumed_stages"):  # stages resumed from a checkpoint in that invocation: their last attempt
            timing += f" ({', '.join(run['resumed_stages'])} resumed: its last attempt)"
        averages = [row.get(m, {}).get("tasks", {}).get("avg") for m in MODELS]
        cells = [fmt(row.get(m, {}).get("ppl", {}).get("ppl")) for m in MODELS] + [fmt(a, 100) for a in averages]
        margins = [fmt(margin_kept(a, dense_avg), 100) for a in averages]
        cells += [" / ".join(margins) if any(margins) else "", speedup(row, "prefill"), speedup(row, "decode")]
        what = ROWS.get(name, BASELINES.get(name, ("",)))[0]
        shown = name if seed == DEFAULT_SEED else f"{name} seed={seed}"
        lines.append(f"| {ratio} | {shown} | {count(run.get('params'))} | {' | '.join(cells)} | {timing} | "
                     f"{run.get('peak_rss_mb', '')} | {what} |")
    lines += ["", "Empty cells and `pending` rows: not measured yet (the script resumes them). † Timed on a re-run "
              "of the row's recipe up to its prune stage (the scored run's folder was gone; same recipe, same widths "
              "up to the run-to-run spread; its command: `pruned_again` in the JSON; the timed folder's parameter count, "
              "when recorded, is named in the cell if it differs from the scored run's).", *seed_table(results),
              *task_table(results)]
    return "\n".join(lines) + "\n"


def mean_sd(values: list[float | None], scale: float = 1.0) -> str:
    """"mean ± sample sd" of the measured values (one value: itself), "(n=k)" when only k of them are measured."""
    measured = [scale * v for v in values if v is not None]
    if not measured:
        return ""
    text = f"{statistics.fmean(measured):,.2f}"
    if len(measured) > 1:
        text += f" ± {statistics.stdev(measured):,.2f}"
    return text + (f" (n={len(measured)})" if len(measured) < len(values) else "")


def seed_table(results: dict) -> list[str]:
    """Rows run with several seeds: mean ± sample standard deviation over the seeds of wiki PPL and of the
    six-task average without boolq, pruned and recovered; [] before any row has a second seed."""
    runs: dict[tuple[str, str], dict[int, dict]] = {}
    for key, row in results["rows"].items():
        if key != "dense" and "run" in row:
            ratio, name, seed = split_key(key)
            runs.setdefault((ratio, name), {})[seed] = row
    several = {group: by_seed for group, by_seed in runs.items() if len(by_seed) > 1}
    if not several:
        return []
    lines = ["", "Rows run with several seeds of the pruning run (calibration draw; LHSPG's data order and LoRA "
             "init; recovery's seed fixed): mean ± sample standard deviation over the seeds; (n=k): only k seeds "
             "measured so far. 6-task: the average without boolq (`average_without` in benchmarks/importance.py).", "",
             "| ratio | row | seeds | n | wiki PPL pruned | wiki PPL recovered | 6-task pruned | 6-task recovered |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for (ratio, name), by_seed in several.items():
        rows = [by_seed[seed] for seed in sorted(by_seed)]
        cells = [mean_sd([row.get(m, {}).get("ppl", {}).get("ppl") for row in rows]) for m in MODELS]
        cells += [mean_sd([average_without(row.get(m, {}).get("tasks")) for row in rows], 100) for m in MODELS]
        lines.append(f"| {ratio} | {name} | {', '.join(map(str, sorted(by_seed)))} | {len(rows)} | {' | '.join(cells)} |")
    return lines


def task_table(results: dict) -> list[str]:
    """The seven tasks one by one (accuracy %, the metric of the average) of every scored model; [] before any."""
    scored = [("0%", "dense", "", results["rows"].get("dense", {}).get("tasks"))]
    for key, row in results["rows"].items():
        if key != "dense":
            scored += [(*key.split(" ", 1), model, row.get(model, {}).get("tasks")) for model in MODELS]
    scored = [entry for entry in scored if entry[3] and "tasks" in entry[3]]
    if not scored:
        return []
    lines = ["", "The seven tasks (first {} documents each; the average without boolq beside the average: see "
             "`average_without` in benchmarks/importance.py):".format(results["limit"]), "",
             f"| ratio | row | model | {' | '.join(AVERAGE_METRIC)} | average | without boolq |",
             "|---|---|---|" + "---:|" * (len(AVERAGE_METRIC) + 2)]
    for ratio, name, model, tasks in scored:
        cells = [fmt(tasks["tasks"].get(task), 100) for task in AVERAGE_METRIC]
        lines.append(f"| {ratio} | {name} | {model} | {' | '.join(cells)} | {fmt(tasks['avg'], 100)} | "
                     f"{fmt(average_without(tasks), 100)} |")
    return lines


def parse_seeds(text: str) -> list[int]:
    """`--seeds 0,1,2` -> [0, 1, 2] (each once, in the order given)."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise SystemExit(f"--seeds takes integers separated by commas (e.g. 0,1,2), got {text!r}") from None
    return list(dict.fromkeys(seeds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="where each row's pipeline folder goes")
    parser.add_argument("--ratios", default="0.2")
    parser.add_argument("--rows", default=",".join(ALL_ROWS), help=f"of: {', '.join(ALL_ROWS)}")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--ppl-windows", type=int, default=128)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--speed-rounds", type=int, default=3)
    parser.add_argument("--seeds", default=str(DEFAULT_SEED),
                        help=f"seeds of each row's pruning run, e.g. 0,1,2 (default: the recipe's, {DEFAULT_SEED})")
    parser.add_argument("--stem", default="methods_smollm2")
    args = parser.parse_args()
    unknown = sorted(set(args.rows.split(",")) - set(ALL_ROWS)) + sorted(set(args.parts.split(",")) - set(PARTS))
    if unknown:
        parser.error(f"unknown row(s)/part(s): {', '.join(unknown)}; rows: {', '.join(ALL_ROWS)}; parts: {', '.join(PARTS)}")
    seeds = parse_seeds(args.seeds)
    if seeds != [DEFAULT_SEED] and set(args.rows.split(",")) & set(BASELINES):
        parser.error(f"--seeds: the baseline rows ({', '.join(BASELINES)}) run their own script, which takes no seed")
    header = {"command": "PYTHONPATH=src python benchmarks/methods.py " + " ".join(sys.argv[1:]),
              "machine": machine_text(), "limit": args.limit}
    results = merge_row(args.stem, header)
    dense = results["rows"].setdefault("dense", {})
    if "params" not in dense:
        dense["params"] = count_parameters(load_model(MODEL, device="cpu"))
        results = merge_row(args.stem, header, "dense", dense)
    # Seed by seed: every row's recipe seed lands before any row's second seed.
    rows = [(float(r), name, seed) for seed in seeds for r in args.ratios.split(",") for name in args.rows.split(",")]
    dense_model = load_model(MODEL, device="cpu") if "speed" in args.parts.split(",") else None
    parts = args.parts.split(",")
    for part in parts:
        if part in ("ppl", "tasks") and part not in dense:
            dense[part] = dense_score(part, args)
            merge_row(args.stem, header, "dense", dense)
    # Row by row, every part of a row before the next row: a session that ends mid-table leaves whole rows
    # (the pipeline folders under --workdir need not outlive it).
    for ratio, name, seed in rows:
        key = row_key(ratio, name, seed)
        row = results["rows"].setdefault(key, {"overrides": [*ROWS.get(name, ("", []))[1], *seed_overrides(seed)]})
        folder = row_folder(args.workdir, key)
        row = results["rows"][key] = again_if_gone(row, folder, parts)
        save = lambda: merge_row(args.stem, header, key, row)  # noqa: B023, E731
        for part in parts:
            if part == "run":
                if "run" not in row:
                    print(f"[{key}] {name if name in BASELINES else 'lorashear run'}", flush=True)
                    row["run"] = stamped(run_row(ratio, name, folder, seed), header)
                    save()
                continue
            if part == "speed":
                if "speed" not in row and "run" in row:
                    print(f"[{key}] timing the pruned folder against dense", flush=True)
                    pruned, again = folder_to_time(ratio, name, folder, seed)
                    row["speed"] = stamped(time_row(dense_model, pruned, args.speed_rounds), header)
                    if again is not None:
                        row["speed"]["pruned_again"] = again
                    save()
                continue
            for model in MODELS:
                if part in row.get(model, {}) or "run" not in row:
                    continue
                print(f"[{key}] scoring {model} {part}", flush=True)
                row.setdefault(model, {})[part] = stamped(score(str(exported(folder, model)), part, args), header)
                save()
                print(f"[{key}] {model} {part}: {json.dumps(row[model][part])[:200]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
