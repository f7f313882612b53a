"""`--method loraprune`: LoRAPrune's iterative pruning as a method of `prune_model`.

LoRA trains on the pretraining-like corpora (`prune/trained.py`) while `LorapruneHook` scores groups by
their LoRA gradients and masks the lowest to the cubic schedule's ratio; then LoRA merges, the masked
groups are the plan, and compress/export remove them. The export gets `loraprune/steps.jsonl` (loss,
scheduled ratio, sparsity, masked groups per kind per step), `loraprune/curves.png` and
`loraprune/training.yaml`.
"""

from __future__ import annotations

from lorashear.models import tied_aliases
from lorashear.prune.context import PruneContext
from lorashear.prune.loraprune.config import CRITERION, LorapruneConfig
from lorashear.prune.loraprune.hook import LorapruneHook
from lorashear.prune.methods import Method, PlanOutcome, register_method
from lorashear.prune.trained import train_method, trained_plan


def loraprune_plan(ctx: PruneContext) -> PlanOutcome:
    """Train with LoRAPrune's masks to the target ratio (no plan yet when the run stopped early at `stop_after_steps`)."""
    c = ctx.config
    options: LorapruneConfig = c.options

    def make_hook(model, graph) -> LorapruneHook:
        return LorapruneHook(options, graph, c.ratio, tuple(c.kinds), c.uniform, tied_aliases(model), c.multiple_of)

    trained, hook, settings = train_method(ctx, make_hook, progress)
    if not trained.run.finished:
        return trained.stopped()
    schedule = {"total_steps": hook.total_steps, "warmup_share": options.warmup_share,
                "cooldown_share": options.cooldown_share, "mask_every": options.mask_every}
    settings.update(schedule=schedule, criterion=hook.criterion.settings())
    return trained_plan(ctx, trained, sorted(hook.masked), settings, "LoRAPrune: loss and sparsity")


def progress(record: dict) -> dict:
    """The progress bar's LoRAPrune items: scheduled ratio, groups masked, live base parameters."""
    return {"ratio": f"{record['scheduled_ratio']:.3f}", "masked": sum(record["masked"].values()),
            "live": f"{record['live_params'] / 1e6:.2f}M"}


register_method(Method("loraprune", LorapruneConfig, loraprune_plan, CRITERION, "auto",
                       "LoRAPrune: LoRA-gradient importance, cubic iterative masks", probe="wanda-sp"))
