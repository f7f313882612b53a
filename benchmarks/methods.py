"""Every method side by side on the default model, before and after the same recovery.

Each row is `lorashear run benchmarks/methods_base.yaml` with its own overrides (method, knowledge
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
import sys
from dataclasses import asdict
from pathlib import Path

from _common import (
    ALL_METHOD_ROWS,
    BASELINE_ROWS,
    DEFAULT_SEED,
    METHOD_ROWS,
    METHODS_MODEL,
    METHODS_RECIPE,
    RESULTS,
    ROOT,
    SCORED_MODELS,
    command_line,
    machine_text,
    method_row_key,
    results_lock,
    run_child,
    score,
)
from render import methods_markdown, write_results

from lorashear.io import write_atomic
from lorashear.models import count_parameters, load_model
from lorashear.pipeline.recipe import Recipe, load_recipe
from lorashear.pipeline.runner import RECIPE_FILE, finished_folder, stage_folder
from lorashear.pipeline.stages import MODEL_DIR, knowledge_enabled, knowledge_settings, plain
from lorashear.prune import METHODS
from lorashear.train.config import load_yaml

# The rows themselves (METHOD_ROWS, BASELINE_ROWS) are in _common.py: render.py lists them too, measured or not.
TRAINED_CHECKPOINT_EVERY = 10  # optimiser steps (a trained method's 49K tokens: 48 steps of ~20 s on a CPU)
PARTS = ("run", "ppl", "tasks", "speed")
SEED_KEYS = ("calibration.seed", "prune.seed")  # recovery's own seed (recover.seed) stays the recipe's


def row_folder(workdir: Path, key: str) -> Path:
    """A row's pipeline folder: WORKDIR/20-lhspg-auto, WORKDIR/20-lhspg-auto-seed1."""
    return workdir / key.replace("%", "").replace(" seed=", "-seed").replace(" ", "-")


def seed_overrides(seed: int) -> list[str]:
    """The recipe overrides of a pruning seed; none for the recipe's own."""
    return [] if seed == DEFAULT_SEED else [f"{key}={seed}" for key in SEED_KEYS]


def exported(out: Path, model: str) -> Path:
    """A row's pruned or recovered folder: OUT/03-prune/model or OUT/04-recover/model."""
    return stage_folder(out, SCORED_MODELS[model]) / MODEL_DIR


def row_argv(ratio: float, name: str, out: Path, prune_only: bool = False, seed: int = DEFAULT_SEED) -> list[str]:
    """The row's command line (after the interpreter): `lorashear run` of the recipe with the row's overrides
    (resuming a stopped run), or the baseline's script; both fill OUT/03-prune/model and OUT/04-recover/model
    (`prune_only`: the recipe's run up to OUT/03-prune/model)."""
    if name in BASELINE_ROWS:
        return [BASELINE_ROWS[name][1], "--ratio", str(ratio), "-o", str(out)]
    overrides = row_overrides(ratio, name, prune_only, seed)
    if METHODS[row_recipe(ratio, name, seed=seed).prune("OUT").method].trained:
        overrides.append(f"prune.checkpoint_every={TRAINED_CHECKPOINT_EVERY}")  # a stopped row resumes its training
    return ["-m", "lorashear", "run", str(METHODS_RECIPE.relative_to(ROOT)), *overrides, "-o", str(out), "--resume"]


def row_overrides(ratio: float, name: str, prune_only: bool = False, seed: int = DEFAULT_SEED) -> list[str]:
    """The base recipe's overrides of a row: its own, its seed's, its ratio, and no pipeline evaluation (scored
    here); `prune_only`: no recovery either."""
    return [*METHOD_ROWS[name][1], *seed_overrides(seed), f"prune.ratio={ratio}", "evaluate=null",
            *(["recover=null"] if prune_only else [])]


def row_recipe(ratio: float, name: str, prune_only: bool = False, seed: int = DEFAULT_SEED) -> Recipe:
    return load_recipe(METHODS_RECIPE, row_overrides(ratio, name, prune_only, seed))


def share_analysis(ratio: float, name: str, out: Path, prune_only: bool = False,
                   seed: int = DEFAULT_SEED) -> str | None:
    """Before a new row starts: if another row of the workdir finished the same knowledge analysis (equal
    `knowledge_settings`: model, rule, probe criterion, calibration), copy its analyze and knowledge stages
    into OUT instead of probing again (deterministic: same settings, same verdict), and say so. Returns that row's folder."""
    if name in BASELINE_ROWS or out.exists():
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
    if name in BASELINE_ROWS:
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
    return {**earlier, "copied_from": importance.name} if same else score(METHODS_MODEL, part, args)


def missing_scores(row: dict, parts: list[str]) -> bool:
    """Whether any scoring part asked for (ppl, tasks, speed) is still missing from a row."""
    return any(part not in row.get(model, {}) for part in parts if part in ("ppl", "tasks") for model in SCORED_MODELS) or (
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
        results = json.loads(path.read_text()) if path.exists() else {"model": METHODS_MODEL, "rows": {}}
        if key is not None:
            results.update(header)
            results["rows"][key] = row  # each part names the run that measured it (`stamped`)
            write_results(stem, results, methods_markdown(results))
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
    parser.add_argument("--rows", default=",".join(ALL_METHOD_ROWS), help=f"of: {', '.join(ALL_METHOD_ROWS)}")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--ppl-windows", type=int, default=128)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--speed-rounds", type=int, default=3)
    parser.add_argument("--seeds", default=str(DEFAULT_SEED),
                        help=f"seeds of each row's pruning run, e.g. 0,1,2 (default: the recipe's, {DEFAULT_SEED})")
    parser.add_argument("--stem", default="methods_smollm2")
    args = parser.parse_args()
    unknown = sorted(set(args.rows.split(",")) - set(ALL_METHOD_ROWS)) + sorted(set(args.parts.split(",")) - set(PARTS))
    if unknown:
        parser.error(f"unknown row(s)/part(s): {', '.join(unknown)}; rows: {', '.join(ALL_METHOD_ROWS)}; parts: {', '.join(PARTS)}")
    seeds = parse_seeds(args.seeds)
    if seeds != [DEFAULT_SEED] and set(args.rows.split(",")) & set(BASELINE_ROWS):
        parser.error(f"--seeds: the baseline rows ({', '.join(BASELINE_ROWS)}) run their own script, which takes no seed")
    header = {"command": command_line(),
              "machine": machine_text(), "limit": args.limit}
    results = merge_row(args.stem, header)
    dense = results["rows"].setdefault("dense", {})
    if "params" not in dense:
        dense["params"] = count_parameters(load_model(METHODS_MODEL, device="cpu"))
        results = merge_row(args.stem, header, "dense", dense)
    # Seed by seed: every row's recipe seed lands before any row's second seed.
    rows = [(float(r), name, seed) for seed in seeds for r in args.ratios.split(",") for name in args.rows.split(",")]
    dense_model = load_model(METHODS_MODEL, device="cpu") if "speed" in args.parts.split(",") else None
    parts = args.parts.split(",")
    for part in parts:
        if part in ("ppl", "tasks") and part not in dense:
            dense[part] = dense_score(part, args)
            merge_row(args.stem, header, "dense", dense)
    # Row by row, every part of a row before the next row: a session that ends mid-table leaves whole rows
    # (the pipeline folders under --workdir need not outlive it).
    for ratio, name, seed in rows:
        key = method_row_key(ratio, name, seed)
        row = results["rows"].setdefault(key, {"overrides": [*METHOD_ROWS.get(name, ("", []))[1], *seed_overrides(seed)]})
        folder = row_folder(args.workdir, key)
        row = results["rows"][key] = again_if_gone(row, folder, parts)
        save = lambda: merge_row(args.stem, header, key, row)  # noqa: B023, E731
        for part in parts:
            if part == "run":
                if "run" not in row:
                    print(f"[{key}] {name if name in BASELINE_ROWS else 'lorashear run'}", flush=True)
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
            for model in SCORED_MODELS:
                if part in row.get(model, {}) or "run" not in row:
                    continue
                print(f"[{key}] scoring {model} {part}", flush=True)
                row.setdefault(model, {})[part] = stamped(score(str(exported(folder, model)), part, args), header)
                save()
                print(f"[{key}] {model} {part}: {json.dumps(row[model][part])[:200]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
