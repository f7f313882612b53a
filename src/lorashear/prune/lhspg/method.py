"""`--method lhspg`: LoRAShear's progressive pruning as a method of `prune_model`.

LoRA trains on the pretraining-like corpora (`prune/trained.py`) while `LhspgHook` drives the least
salient groups to exactly zero; then LoRA merges, the zeroed groups are the plan, and compress/export
proceed as for one-shot methods. The export gets `lhspg/steps.jsonl` (loss, sparsity, zeroed groups per
kind per step), `lhspg/curves.png` and `lhspg/training.yaml`.
"""

from __future__ import annotations

from lorashear.importance import get_criterion
from lorashear.models import tied_aliases
from lorashear.prune.context import PruneContext
from lorashear.prune.lhspg.config import LhspgConfig
from lorashear.prune.lhspg.hook import LhspgHook
from lorashear.prune.methods import Method, PlanOutcome, register_method
from lorashear.prune.trained import train_method, trained_plan


def lhspg_plan(ctx: PruneContext) -> PlanOutcome:
    """Train with LHSPG to the target ratio (no plan yet when the run stopped early at `stop_after_steps`)."""
    c = ctx.config
    options: LhspgConfig = c.options

    def make_hook(model, graph) -> LhspgHook:
        # taylor, wanda-sp, ... read calibration batches, unless taylor reads the training steps' gradients
        needs_data = (options.saliency_steps is None
                      and get_criterion(options.saliency, **options.saliency_options).needs_data)
        data = ctx.calibration().batches[: options.saliency_samples] if needs_data else None
        return LhspgHook(options, graph, c.ratio, tuple(c.kinds), c.uniform, tied_aliases(model), data, c.multiple_of)

    trained, hook, settings = train_method(ctx, make_hook, progress)
    if not trained.run.finished:
        return trained.stopped()
    settings.update(schedule=hook.schedule.to_dict(), saliency=hook.criterion.settings())
    return trained_plan(ctx, trained, hook.redundant(), settings, "LHSPG: loss and sparsity")


def progress(record: dict) -> dict:
    """The progress bar's LHSPG items: period, groups zeroed, live base parameters (the loop adds the loss)."""
    return {"period": record["period"], "zeroed": sum(record["zeroed"].values()),
            "live": f"{record['live_params'] / 1e6:.2f}M"}


register_method(Method("lhspg", LhspgConfig, lhspg_plan, "lhspg", "auto",
                       "LoRAShear's LHSPG: LoRA training while the least salient groups fade to zero", probe="wanda-sp"))
