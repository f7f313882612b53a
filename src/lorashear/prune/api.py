"""`prune_model`: model argument → graph → plan → compress → exported folder, as one call.

The `lorashear prune` command and the demo both go through here, so the recipe lives once.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorashear.compress import FolderWeights, compress, compress_skeleton, count_params, export
from lorashear.compress.export import NORM_EPS
from lorashear.errors import LorashearError
from lorashear.graph import build_graph
from lorashear.graph.structures import DEFAULT_KINDS, GROUP_KINDS
from lorashear.importance.calibration import CalibrationConfig
from lorashear.knowledge import analyze_knowledge, load_knowledge, mark_unprunable
from lorashear.knowledge.analysis import KnowledgeConfig, KnowledgeResult
from lorashear.knowledge.run import check_knowledge
from lorashear.models import (
    Placement,
    load_skeleton,
    load_to_edit,
    load_tokenizer,
    resolve_dtype,
    tied_aliases,
)
from lorashear.prune.context import PruneContext
from lorashear.prune.methods import get_method
from lorashear.prune.options import CriterionConfig
from lorashear.prune.plan import PruningPlan
from lorashear.train import sharding
from lorashear.train.accelerator import host_peak


@dataclass
class PruneConfig:
    """What to prune and how; validated on creation so bad input fails before the model loads."""

    model: str
    output: str
    method: str = "random"
    ratio: float = 0.2
    kinds: tuple[str, ...] = DEFAULT_KINDS
    uniform: bool = False
    seed: int = 0
    multiple_of: int = 1  # kept MLP and hidden channels: a multiple of this (kernels; plain exports)
    merge_lora: bool = True  # False keeps the LoRA adapter of an adapter-folder model unmerged (adapter/)
    norm_eps: str = "exact"  # "stock": a plain folder where only the shared norm eps prevents one (bounded error)
    overwrite: bool = False
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    knowledge: KnowledgeConfig | None = None  # None: the method's default rule
    knowledge_from: str | None = None  # an earlier analysis's knowledge.json: its verdict is used, nothing probed
    batch_size: int = 4
    dtype: str = "auto"  # the model's weights while pruning and in the exported folder (lorashear.models.DTYPES)
    placement: Placement | None = None  # a one-shot method's model spread over several devices (--device-map)
    # The method's own options: an instance of its `Method.config_cls` (CriterionConfig, LhspgConfig, ...) or a
    # mapping of its fields; None: its defaults. A trained method's hold its whole training run.
    options: Any = None

    def __post_init__(self) -> None:
        self.kinds = tuple(self.kinds)
        unknown = sorted(set(self.kinds) - set(GROUP_KINDS))
        if unknown:
            raise LorashearError(f"unknown structures {unknown}; choose from {', '.join(GROUP_KINDS)}")
        if not self.kinds:
            raise LorashearError("no structures to prune; name at least one kind")
        if not 0.0 < self.ratio < 1.0:
            raise LorashearError(f"ratio must be in (0, 1), got {self.ratio}")
        if isinstance(self.multiple_of, bool) or not isinstance(self.multiple_of, int) or self.multiple_of < 1:
            raise LorashearError(f"--multiple-of must be a positive integer, got {self.multiple_of!r}")
        if self.norm_eps not in NORM_EPS:
            raise LorashearError(f"--norm-eps must be one of {', '.join(NORM_EPS)}, got {self.norm_eps!r}")
        method = get_method(self.method)
        if method.trained and self.placement is not None:
            raise LorashearError(f"--device-map spreads a model for forward passes; method '{self.method}' trains: "
                                 "launch it sharded with FSDP instead (docs/multi-gpu.md)")
        self.options = method.options(self.options)
        if method.trained and not self.merge_lora:
            raise LorashearError(f"method '{self.method}' trains LoRA of its own; merge the adapter first, drop --lora")
        if self.knowledge is None:
            self.knowledge = KnowledgeConfig(rule=method.knowledge, criterion=method.probe_criterion)
        check_knowledge(self.knowledge, self.calibration)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise LorashearError(f"--batch-size must be a positive integer, got {self.batch_size!r}")

        resolve_dtype(self.dtype)  # an unknown name, or a dtype this device cannot run, fails before the load

    @property
    def score_options(self) -> dict:
        """The options of the method's criterion, as a one-shot method scores with them ({} for the others)."""
        return self.options.score_options if isinstance(self.options, CriterionConfig) else {}


@dataclass
class PruneResult:
    """Where the pruned model went, the plan that made it, and how long each step took."""

    folder: Path
    plan: PruningPlan | None  # None when a trained method stopped early
    params_before: int
    params_after: int
    seconds: dict[str, float] = field(default_factory=dict)
    finished: bool = True  # False: a trained method stopped early (stop_after_steps); `folder` is its run folder


def prune_model(config: PruneConfig, log: Callable[[str], None] = print) -> PruneResult:
    """Load → graph → knowledge analysis → the method's plan → compress → export to `config.output`."""
    out = Path(config.output)
    if out.exists() and any(out.iterdir()) and not config.overwrite:
        raise LorashearError(f"{out} exists and is not empty; choose another folder or pass --overwrite")
    ctx, seconds = prepare(config, log)
    model, tokenizer = ctx.model, ctx.tokenizer

    start = time.perf_counter()
    ctx.knowledge = knowledge_stage(ctx)
    seconds["knowledge"] = time.perf_counter() - start

    start = time.perf_counter()
    outcome = get_method(config.method).plan(ctx)
    plan = outcome.plan
    if plan is None:  # a trained method stopped at stop_after_steps: `--resume` continues its run folder
        params = count_params(model)
        return PruneResult(outcome.run_dir, None, params, params, seconds, finished=False)
    plan.settings["knowledge"] = ctx.knowledge.to_dict() if ctx.knowledge else None
    seconds["plan"] = time.perf_counter() - start

    params_before = count_params(model)
    if not outcome.main_process:  # DDP: the main process writes the folder
        return PruneResult(out, plan, params_before, params_before - plan.params_removed, seconds)
    start = time.perf_counter()
    weights = None
    if outcome.model_dir is not None:  # sharded: the skeleton is compressed; export streams the merged weights through
        weights = FolderWeights(outcome.model_dir, compress_skeleton(model, plan.groups))
    else:
        compress(model, plan.groups)
    seconds["compress"] = time.perf_counter() - start

    start = time.perf_counter()
    extra = dict(outcome.files)
    if ctx.knowledge is not None:
        extra["knowledge.json"] = json.dumps(ctx.knowledge.to_dict(), indent=2)
    folder = export(model, tokenizer, out, plan.groups, params_before, merge_lora=config.merge_lora,
                    overwrite=config.overwrite, extra_files=extra, record=plan_record(plan), norm_eps=config.norm_eps,
                    weights=weights)
    seconds["export"] = time.perf_counter() - start
    if outcome.run_dir is not None:  # a trained method's checkpoints and logs: the folder holds what is kept
        shutil.rmtree(outcome.run_dir, ignore_errors=True)
    log(f"removed {plan.params_removed:,} of {plan.params_total:,} parameters "
        f"({plan.achieved_ratio:.2%}) -> {folder}")
    log(f"peak host memory of this process (the whole run): {host_peak() / 2**20:,.0f} MiB")
    return PruneResult(folder, plan, params_before, count_params(model), seconds)


def prepare(config: PruneConfig, log: Callable[[str], None] = print):
    """Load the model and its tokenizer and discover its groups: the `PruneContext` of a run, and seconds taken.
    Under FSDP (`train.sharding`) the context's model is the skeleton (meta device): the trained method loads its
    rows of the weights on each process."""
    if sharding.launched():
        check_shardable(config)
        model = shapes = load_skeleton(config.model, config.dtype)
    else:
        model, shapes = load_to_edit(config.model, config.dtype, config.placement, "pruning")
    if not config.merge_lora and not hasattr(model, "peft_config"):
        raise LorashearError(
            f"--lora keeps the model's LoRA adapter unmerged, but {config.model} has none; "
            "pass a peft adapter folder (with adapter_config.json) or drop --lora"
        )
    try:
        tokenizer = load_tokenizer(config.model)
    except LorashearError as err:  # a bare model folder: export without a tokenizer
        log(f"warning: {err}; the pruned folder will have no tokenizer")
        tokenizer = None
    start = time.perf_counter()
    graph = build_graph(shapes, config.kinds)
    seconds = {"discover": time.perf_counter() - start}
    return PruneContext(config, model, tokenizer, graph, tied_aliases(model), log), seconds


def check_shardable(config: PruneConfig) -> None:
    """What an FSDP launch cannot prune: a method that does not train, an analysis that probes the whole model."""
    if not get_method(config.method).trained:
        raise LorashearError(f"--method {config.method} does not train: under FSDP only the trained methods (lhspg, "
                             "loraprune) run; run one-shot methods in one process")
    if config.knowledge_from is None and config.knowledge.probes:
        raise LorashearError("under FSDP the knowledge analysis cannot probe the model (its forward passes need "
                             "the whole model on one process): run `lorashear knowledge` first and pass "
                             "--knowledge-from its knowledge.json, or choose a rule that does not probe "
                             "(--unprunable fixed or none)")


def knowledge_stage(ctx) -> KnowledgeResult | None:
    """Run the knowledge analysis the config asks for (on the scores the plan reuses) and mark its unprunable
    groups on the graph; `knowledge.run_knowledge` is the same analysis as a stage of its own."""
    kc = ctx.config.knowledge
    if ctx.config.knowledge_from is not None:
        result = load_knowledge(ctx.config.knowledge_from, ctx.graph, ctx.config.kinds)
        mark_unprunable(ctx.graph, result)
        ctx.log(result.summary())
        return result
    if kc.rule == "none":
        return None
    method = get_method(ctx.config.method)
    options = ctx.config.score_options if kc.criterion == method.criterion else None  # the plan's own scores
    scores = ctx.scores(kc.criterion, options) if kc.probes else None
    held_out = ctx.calibration().held_out if kc.probes else None
    result = analyze_knowledge(ctx.model, ctx.graph, ctx.config.kinds, kc, scores, held_out,
                               ctx.config.batch_size, ctx.log)
    mark_unprunable(ctx.graph, result)
    return result


def plan_record(plan: PruningPlan) -> dict:
    """What `pruning.json` says of how the plan was made (with the removed groups; the full knowledge analysis is
    knowledge.json)."""
    knowledge = plan.settings.get("knowledge")
    return {
        "method": plan.method,
        "ratio": plan.ratio,
        "achieved_ratio": plan.achieved_ratio,
        "uniform": plan.uniform,
        "kinds": plan.kinds,
        "settings": {k: v for k, v in plan.settings.items() if k != "knowledge"},
        "knowledge": None if knowledge is None else {
            "rule": knowledge["settings"]["rule"],
            "criterion": knowledge["settings"]["criterion"],
            "unprunable": knowledge["unprunable"],
            **({"from": knowledge["settings"]["from"]} if "from" in knowledge["settings"] else {}),  # --knowledge-from
        },
    }
