"""What every trained pruning method (LHSPG, LoRAPrune) shares: a plain language-model batch source over the
pretraining-like corpora, and `run_trained`, the recipe that trains LoRA with the method's hooks on the one
training loop (`lorashear.train`). Its options are the method's config, a `TrainedConfig` (`prune/options.py`).

    def my_plan(ctx):                                         # ctx.config.options: a MyConfig(TrainedConfig)
        trained, hook, settings = train_method(ctx, lambda model, graph: MyHook(graph, ...), progress)
        if not trained.run.finished:
            return trained.stopped()                          # stopped early: `--resume` continues
        return trained_plan(ctx, trained, hook.chosen, settings, "Mine: loss and sparsity")  # LoRA merged, logs kept

Hooks see the LoRA model's graph (peft names: `…base_layer.weight`, `lora_A/B`), rebuilt identically on
every run and resume, with the knowledge analysis's exclusions carried over from `ctx.graph`, which waits
packed (`StructureGraph.pack`) while the LoRA graph is traced and LoRA trains.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate import init_empty_weights
from torch import nn

from lorashear.compress.core import base_name
from lorashear.errors import LorashearError
from lorashear.graph import build_graph
from lorashear.graph.counting import ParamCounter
from lorashear.graph.structures import Group, StructureGraph
from lorashear.models import load_skeleton, merge_lora
from lorashear.prune.methods import PlanOutcome
from lorashear.prune.options import TrainedConfig
from lorashear.prune.plan import PruningPlan
from lorashear.recover.losses import lm_loss
from lorashear.recover.streams import Category, MixedStream, text_categories
from lorashear.train import TrainHook, TrainRun, add_lora, lora_run, make_accelerator, sharding, train
from lorashear.train import checkpoint as ckpt
from lorashear.train.accelerator import process_peaks
from lorashear.train.logs import read_jsonl
from lorashear.train.lora import load_for_lora, stop_gradient_checkpointing

if TYPE_CHECKING:
    from lorashear.prune.context import PruneContext

MERGED_DIR = "merged"  # a sharded run's merged weights, in its run folder until the export has read them
CONFIG_FILE = "training.yaml"  # the resolved training options, next to the run's logs
SETTINGS_FILE = "settings.json"  # the method's settings; --resume refuses different ones (run.json: the pipeline's)


class TextStream(TrainHook):
    """The loop's batch source: blocks of the corpora, categories mixed uniformly; its position is
    checkpointed with the run (a hook's state), so a resumed run reads the same data."""

    def __init__(self, categories: Sequence[Category], seed: int) -> None:
        self.stream = MixedStream(categories, seed)
        self.weights = [1.0 / len(categories)] * len(categories)

    @property
    def tokens(self) -> int:
        return sum(c.input_ids.numel() for c in self.stream.categories)

    def next_batch(self, run: TrainRun, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids, labels, _ = self.stream.next_batch(self.weights, rows)
        return ids, labels

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)


def lm_step_loss(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Next-token cross-entropy: what a trained pruner keeps minimising while structures fade."""
    return lm_loss(model(input_ids=ids).logits, labels), {}


@dataclass
class TrainedRun:
    """A finished (or stopped) training run of a pruning method."""

    model: nn.Module  # the trained PeftModel (unwrapped)
    graph: StructureGraph  # the groups of the LoRA model, as the hooks saw them
    hooks: list[TrainHook]
    run: TrainRun
    work: Path

    def stopped(self) -> PlanOutcome:
        """The outcome of a run stopped early (`stop_after_steps`): no plan yet, its run folder kept for `--resume`."""
        return PlanOutcome(None, run_dir=self.work, main_process=self.run.accelerator.is_main_process)


# (LoRA model, its graph, total optimiser steps) -> the method's hooks; raises LorashearError on bad input.
HookFactory = Callable[[nn.Module, StructureGraph, int], list[TrainHook]]


def run_trained(ctx: PruneContext, make_hooks: HookFactory, settings: dict, *, desc: str,
                postfix: Callable[[dict], dict] | None = None) -> TrainedRun:
    """Train LoRA on `ctx.model` (in place) with the method's hooks, in `.OUT.partial` (resumable).

    Every check (data, schedule, reachable ratio) runs before the run folder is written.
    """
    from accelerate.utils import set_seed

    config: TrainedConfig = ctx.config.options.training()  # the loop's options (training.yaml)
    if ctx.tokenizer is None:
        raise LorashearError(f"method '{ctx.config.method}' trains on text, but the model has no tokenizer")
    accelerator = make_accelerator(config)
    work = ckpt.check_run_dir(ctx.config.output, config.resume, ctx.config.overwrite)
    if config.resume:
        config.check_same_run(work / CONFIG_FILE)
        _check_same_settings(work / SETTINGS_FILE, settings)
    set_seed(config.seed)
    stream = TextStream(text_categories(config.data, ctx.tokenizer, config.seq_len, 0.0, config.seed), config.seed)
    if stream.tokens < config.tokens:
        raise LorashearError(
            f"--tokens {config.tokens:,} is more than the training data holds ({stream.tokens:,} tokens in "
            f"{', '.join(config.data)} at --seq-len {config.seq_len}); lower --tokens or add --data"
        )
    total_steps = math.ceil(config.tokens / config.tokens_per_step(accelerator.num_processes))
    if sharding.active(accelerator):  # FSDP: each process loads its rows; the LoRA graph comes from a skeleton
        model = load_for_lora(ctx.config.model, accelerator, config, ctx.config.dtype)
        with init_empty_weights(include_buffers=False):
            shapes = add_lora(load_skeleton(ctx.config.model, ctx.config.dtype), config)
    else:
        model = shapes = add_lora(ctx.model.to(accelerator.device), config)
    verdicts, groups = unprunable_verdicts(ctx.graph), len(ctx.graph.groups)
    with graph_packed(ctx):  # the hooks work on the LoRA model's graph; the model's waits, packed
        graph = lora_graph(shapes, verdicts, groups, tuple(ctx.config.kinds))
        del shapes
        hooks = make_hooks(model, graph, total_steps)

        accelerator.wait_for_everyone()  # every process has checked before anyone writes
        if accelerator.is_main_process:
            ckpt.start_run_dir(work, config.resume)
            config.save(work / CONFIG_FILE)
            (work / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
        accelerator.wait_for_everyone()
        run = train(lora_run(model, config, accelerator, work, total_steps), stream.next_batch, lm_step_loss,
                    [stream, *hooks], desc=desc, postfix=postfix)
    return TrainedRun(run.unwrapped, graph, hooks, run, work)


@contextmanager
def graph_packed(ctx: PruneContext) -> Iterator[None]:
    """`ctx.graph` packed (`StructureGraph.pack`) while the block runs and its objects freed, the same graph after:
    measured at 0.9B, the model's graph beside the LoRA model's was ~0.2 bytes per parameter of the peak."""
    packed = ctx.graph.pack()
    ctx.graph = None
    try:
        yield
    finally:
        ctx.graph = StructureGraph.unpack(packed)


def _check_same_settings(path: Path, settings: dict) -> None:
    before = json.loads(path.read_text()) if path.is_file() else {}
    now = json.loads(json.dumps(settings))  # as saved: tuples become lists
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise LorashearError(f"--resume with different settings than the interrupted run ({diffs}); use the same ones")


def merge_trained(trained: TrainedRun) -> nn.Module:
    """Check that every process holds the same weights, then merge LoRA into them (in place: the
    model the method was given comes back, in eval mode with its KV cache on). Sharded (FSDP): each process
    merges its rows and the model keeps its (zeroed) LoRA layers; `trained_plan` writes the weights out."""
    if trained.run.sharded:
        sharding.merge_lora_(trained.model)
        return trained.model.eval()
    assert_same_weights(trained.run.accelerator, trained.model)
    model = merge_lora(trained.model)
    stop_gradient_checkpointing(model)
    model.config.use_cache = True
    return model.eval()


def assert_same_weights(accelerator, model: nn.Module) -> None:
    """DDP: hooks edit the weights on every process, which must stay identical; compare checksums."""
    if accelerator.num_processes == 1:
        return
    with torch.no_grad():
        sums = torch.stack([torch.stack([p.double().sum(), p.double().square().sum()]) for p in model.parameters()])
    gathered = accelerator.gather(sums.flatten()[None].to(accelerator.device))
    if not torch.equal(gathered.min(0).values, gathered.max(0).values):
        raise RuntimeError("the processes' weights differ after training: a hook edited them non-deterministically")


def _twin_key(group: Group) -> tuple:
    """A group by its base-model slices (peft prefixes and `.base_layer` dropped, LoRA factors left out)."""
    slices = sorted((name, s.dim, s.index) for s in group.slices if (name := base_name(s.param)) is not None)
    return group.kind, group.layer, tuple(slices)


def unprunable_verdicts(graph: StructureGraph) -> dict[tuple, str]:
    """The reasons of `graph`'s unprunable groups (the knowledge analysis's verdicts), by twin key: what the LoRA
    model's graph takes over (`lora_graph`) while the model's graph waits packed."""
    return {_twin_key(g): g.unprunable for g in graph.groups if g.unprunable}


def lora_graph(model: nn.Module, verdicts: dict[tuple, str], groups: int, kinds: tuple[str, ...]) -> StructureGraph:
    """The LoRA model's graph, each group unprunable where its twin in the model's graph is (`verdicts`); the
    model's graph had `groups` groups, one twin each."""
    lora = build_graph(model, kinds)
    found = 0
    for group in lora.groups:
        reason = verdicts.get(_twin_key(group))
        if reason is not None:
            group.unprunable = group.unprunable or reason
            found += 1
    if len(lora.groups) != groups or found != len(verdicts):
        raise RuntimeError(f"the LoRA model's graph ({len(lora.groups)} groups, {found} of {len(verdicts)} unprunable "
                           f"ones found) is not twin to the model's ({groups} groups)")
    return lora


def base_groups(graph: StructureGraph, lora: StructureGraph, indices: Sequence[int]) -> list[Group]:
    """The groups of `graph` (the model without LoRA) that groups `indices` of the LoRA graph are."""
    twins = _Twins(graph)
    return [twins.find(lora.groups[i]) for i in indices]


class _Twins:
    """`graph`'s groups by the hash of their `_twin_key` (an int each: a dict of the keys themselves would hold
    a third copy of the graph's slices), each hit checked against the full key."""

    def __init__(self, graph: StructureGraph) -> None:
        self.by_hash: dict[int, list[Group]] = {}
        for group in graph.groups:
            self.by_hash.setdefault(hash(_twin_key(group)), []).append(group)

    def find(self, group: Group) -> Group | None:
        key = _twin_key(group)
        return next((g for g in self.by_hash.get(hash(key), []) if _twin_key(g) == key), None)


def method_settings(ctx: PruneContext) -> dict:
    """What a trained method's run is (`settings.json`; `--resume` refuses others): method, ratio, kinds, channel
    multiple, its own options."""
    c = ctx.config
    return {"method": c.method, "ratio": c.ratio, "kinds": list(c.kinds), "uniform": c.uniform,
            "multiple_of": c.multiple_of, c.method: c.options.own_options()}


def train_method(ctx: PruneContext, make_hook: Callable[[nn.Module, StructureGraph], Any],
                 progress: Callable[[dict], dict]) -> tuple[TrainedRun, Any, dict]:
    """Train with the method's one hook (its `check(total_steps)` refuses bad input before any work):
    (the run, the hook, the run's settings); `trained.run.finished` is False when it stopped early."""
    made = []

    def hooks(model: nn.Module, graph: StructureGraph, total_steps: int) -> list[TrainHook]:
        hook = make_hook(model, graph)
        hook.check(total_steps)
        made.append(hook)
        return [hook]

    settings = method_settings(ctx)
    trained = run_trained(ctx, hooks, settings, desc=ctx.config.method, postfix=progress)
    return trained, made[0], settings


def trained_plan(ctx: PruneContext, trained: TrainedRun, chosen: Sequence[int], settings: dict,
                 title: str) -> PlanOutcome:
    """Merge LoRA, turn the LoRA graph's `chosen` groups into the plan, and hand the run's logs to the
    export (`METHOD/steps.jsonl`, `training.yaml`, `curves.png` titled `title`) and its run folder to remove."""
    c = ctx.config
    merge_trained(trained)
    groups = base_groups(ctx.graph, trained.graph, chosen)
    counter = ParamCounter(ctx.graph, ctx.aliases)
    counter.add(groups)
    run = trained.run
    peaks = process_peaks(run.accelerator)  # the training's, per process (before the export)
    if run.accelerator.is_main_process:
        ctx.log("peak memory per process while training: " + ", ".join(f"{p / 2**20:,.0f} MiB" for p in peaks))
    settings = {**settings,
                "training": {**c.options.training().to_dict(), "steps": run.step, "tokens_seen": run.tokens_seen,
                             "num_processes": run.accelerator.num_processes, "sharded": run.sharded,
                             "peak_memory_bytes": peaks},
                "calibration": ctx.calibration_record()}
    main = run.accelerator.is_main_process
    model_dir = None
    if run.sharded:  # the merged weights, a tensor at a time, for compress/export to read on the main process
        model_dir = trained.work / MERGED_DIR
        sharding.save_pretrained(trained.model, model_dir, main)
        run.accelerator.wait_for_everyone()
    plan = PruningPlan(c.method, c.ratio, c.uniform, list(c.kinds), groups, counter.total, counter.removed_params,
                       {k: v for k, v in settings.items() if k not in ("method", "ratio", "kinds", "uniform")})
    return PlanOutcome(plan, run_files(trained.work, c.method, title) if main else {}, trained.work, main, model_dir)


def run_files(work: Path, folder: str, title: str) -> dict[str, str | bytes]:
    """The run's step log, resolved options and loss/sparsity curves (`title`), as export files under `folder/`."""
    steps = work / "logs" / "steps.jsonl"
    files: dict[str, str | bytes] = {f"{folder}/steps.jsonl": steps.read_text(),
                                     f"{folder}/{CONFIG_FILE}": (work / CONFIG_FILE).read_text()}
    picture = plot_curves(read_jsonl(steps), work / "logs" / "curves.png", title)
    if picture is not None:
        files[f"{folder}/curves.png"] = picture.read_bytes()
    return files


def plot_curves(steps: list[dict], path: Path, title: str) -> Path | None:
    """Training loss and sparsity per optimiser step, one PNG (two y axes)."""
    if not steps:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    x = [r["step"] for r in steps]
    fig, loss_ax = plt.subplots(figsize=(7, 4))
    loss_ax.plot(x, [r["loss"] for r in steps], lw=1, color="tab:blue")
    loss_ax.set_xlabel("optimiser step")
    loss_ax.set_ylabel("training loss (nats)", color="tab:blue")
    sparsity_ax = loss_ax.twinx()
    sparsity_ax.plot(x, [100 * r["sparsity"] for r in steps], lw=1.5, color="tab:red")
    sparsity_ax.set_ylabel("parameters removed (%)", color="tab:red")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
