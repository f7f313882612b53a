"""The pipeline's stages, each a thin call of a stage's own API that writes into its staging folder.

A stage returns True when it finished, False when it stopped early on purpose (a training stage's
`stop_after_steps`) and can be resumed. Its folder is `ctx.work` until the runner renames it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from lorashear.evaluate import EvalResult
from lorashear.evaluate import write_json as write_result
from lorashear.evaluate.many import evaluate_many
from lorashear.graph import build_graph
from lorashear.graph.summary import kind_stats, parse_kinds, summarize
from lorashear.io import write_atomic
from lorashear.knowledge import heatmap, reuse_knowledge, run_knowledge
from lorashear.models import count_parameters, load_skeleton
from lorashear.pipeline.recipe import Recipe
from lorashear.prune.api import prune_model
from lorashear.recover import recover as run_recovery
from lorashear.train.checkpoint import latest_checkpoint, partial_dir

MODEL_DIR = "model"  # the exported / recovered HF folder inside a stage's folder
CONFIG_FILE = "config.yaml"  # the stage's resolved config
MODELS = ("dense", "pruned", "recovered")  # evaluated in this order; speed ratios are to the first


@dataclass
class StageContext:
    """What a stage needs: the recipe, the run folder, its own staging folder, finished stages' folders."""

    recipe: Recipe
    out: Path
    work: Path
    finished: Callable[[str], Path | None]  # stage name -> its finished folder (None: off or not run)
    log: Callable[[str], None] = print


def plain(config) -> dict:
    """A dataclass or mapping as plain JSON/YAML types (nested dataclasses → dicts, tuples → lists)."""
    return json.loads(json.dumps(config, default=dataclasses.asdict))


def write_config(folder: Path, config) -> None:
    """The stage's resolved config (a dataclass or a mapping) as YAML."""
    write_atomic(folder / CONFIG_FILE, yaml.safe_dump(plain(config), sort_keys=False))


def write_json(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


# ---------------------------------------------------------------------- analyze


def analyze(ctx: StageContext) -> bool:
    """The removable structures: per kind and per layer counts (analyze.json), the summary (summary.txt)."""
    options = ctx.recipe.analyze()
    kinds_text = options["kinds"] if isinstance(options["kinds"], str) else ",".join(options["kinds"])
    kinds = parse_kinds(kinds_text)
    model = load_skeleton(ctx.recipe.model, ctx.recipe.dtype, lora=options["lora"])  # on the meta device: no weights read
    start = time.perf_counter()
    graph = build_graph(model, kinds=kinds)
    seconds = time.perf_counter() - start
    layers: dict[str, dict[str, int]] = {}
    for g in graph.groups:
        if g.kind in kinds and g.layer is not None:
            per_layer = layers.setdefault(g.kind, {})
            per_layer[str(g.layer)] = per_layer.get(str(g.layer), 0) + 1
    write_json(ctx.work / "analyze.json", {"model": ctx.recipe.model, "kinds": list(kinds),
                                           "params": count_parameters(model, include_lora=False),
                                           "stats": kind_stats(graph, kinds), "layers": layers, "seconds": seconds})
    write_atomic(ctx.work / "summary.txt", summarize(graph, kinds, seconds) + "\n")
    write_config(ctx.work, {"model": ctx.recipe.model, **options, "kinds": list(kinds)})
    return True


# ---------------------------------------------------------------------- knowledge


def knowledge_enabled(recipe: Recipe) -> bool:
    return recipe.knowledge().rule != "none"


def knowledge_settings(recipe: Recipe) -> dict:
    """What the knowledge stage's verdict depends on (its config.yaml): two recipes with equal settings
    get the same analysis, so one finished stage can stand for both (benchmarks/methods.py shares it)."""
    kinds, source = list(recipe.prune_setting("kinds")), recipe.knowledge_from()
    if source is not None:
        return {"model": recipe.model, "from": source, "kinds": kinds}
    return {"model": recipe.model, "knowledge": recipe.knowledge(), "calibration": recipe.calibration(),
            "kinds": kinds, "batch_size": recipe.prune_setting("batch_size"),
            # a one-shot method's criterion options (CriterionConfig): the probe scores with them when it is that criterion
            "score_options": recipe.sections["prune"].get("score_options", {})}


def knowledge(ctx: StageContext) -> bool:
    """LoRAShear's knowledge-distribution analysis as the prune stage will use it: knowledge.json + heatmap."""
    recipe, settings = ctx.recipe, knowledge_settings(ctx.recipe)
    if "from" in settings:  # knowledge.from: that verdict, not probed
        result = reuse_knowledge(recipe.model, settings["kinds"], settings["from"], recipe.dtype, ctx.log)
    else:
        config = settings["knowledge"]
        # The prune stage's plan scores with its criterion's options: a probe by the same criterion scores as it will.
        options = settings["score_options"] if config.criterion == recipe.method().criterion else None
        result = run_knowledge(recipe.model, settings["kinds"], config, settings["calibration"],
                               criterion_options=options, dtype=recipe.dtype, batch_size=settings["batch_size"],
                               log=ctx.log)
    heatmap(result, ctx.work / "knowledge.png")
    result.save(ctx.work / "knowledge.json")
    write_config(ctx.work, settings)
    return True


# ---------------------------------------------------------------------- prune


def prune(ctx: StageContext) -> bool:
    """Plan, compress and export (`prune_model`); the knowledge stage's verdict is reused, not re-probed.

    The method's keys of the recipe's `prune:` section arrive as `PruneConfig.options` (see `Recipe.prune`):
    a trained method (lhspg, loraprune) reads its schedule and budget there.
    """
    analysis = ctx.finished("knowledge")
    out = ctx.work / MODEL_DIR
    config = ctx.recipe.prune(out, analysis / "knowledge.json" if analysis else None)
    if ctx.recipe.method().trained:  # its run folder holds checkpoints: an interrupted run resumes
        config.options.resume = latest_checkpoint(partial_dir(out)) is not None
        if config.options.resume:
            ctx.log(f"prune: resuming from {latest_checkpoint(partial_dir(out))}")
    else:  # a one-shot method redoes an interrupted stage whole
        for leftover in ctx.work.iterdir():
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    result = prune_model(config, ctx.log)
    if not result.finished:
        ctx.log(f"prune: stopped after step {config.options.stop_after_steps} (stop_after_steps); "
                "rerun with --resume to continue")
        return False
    write_json(ctx.work / "prune.json", {"params_before": result.params_before, "params_after": result.params_after,
                                         "achieved_ratio": result.plan.achieved_ratio, "seconds": result.seconds})
    write_config(ctx.work, config)
    return True


# ---------------------------------------------------------------------- recover


def recover(ctx: StageContext) -> bool:
    """LoRA recovery of the pruned folder; an interrupted run resumes from its last checkpoint."""
    out = ctx.work / MODEL_DIR
    resume = latest_checkpoint(partial_dir(out)) is not None
    if resume:
        ctx.log(f"recover: resuming from {latest_checkpoint(partial_dir(out))}")
    config = ctx.recipe.recover(ctx.finished("prune") / MODEL_DIR, out, resume)
    result = run_recovery(config)
    if not result.finished:
        ctx.log(f"recover: stopped after step {result.steps} (stop_after_steps); rerun with --resume to continue")
        return False
    write_json(ctx.work / "recover.json", {"steps": result.steps, "tokens_seen": result.tokens_seen})
    write_config(ctx.work, config.to_dict())
    return True


# ---------------------------------------------------------------------- evaluate


def evaluated_models(ctx: StageContext) -> dict[str, str]:
    """The models the evaluation compares: the dense one and every finished model stage's folder."""
    models = {"dense": ctx.recipe.model}
    for name, stage in (("pruned", "prune"), ("recovered", "recover")):
        if ctx.finished(stage) is not None:
            models[name] = str(ctx.finished(stage) / MODEL_DIR)
    return models


def evaluate(ctx: StageContext) -> bool:
    """Each model's PPL and tasks (<name>.json, kept across a resume), then all timed side by side (speed.json)."""
    config, rounds = ctx.recipe.evaluate()
    models = evaluated_models(ctx)

    def saved(name: str) -> EvalResult | None:
        target = ctx.work / f"{name}.json"
        return EvalResult.from_dict(json.loads(target.read_text())) if target.is_file() else None

    timed = ctx.work / "speed.json"
    done = evaluate_many(models, config, dtype=ctx.recipe.dtype, speed=config.speed and not timed.is_file(),
                         saved=saved, on_result=lambda name, result: write_result(result, ctx.work / f"{name}.json"),
                         log=ctx.log, rounds=rounds)
    write_json(ctx.work / "models.json", done.sizes)
    if done.speed is not None:
        write_json(timed, done.speed.to_dict())
    write_config(ctx.work, {**dataclasses.asdict(config), "speed_rounds": rounds, "models": models})
    return True
