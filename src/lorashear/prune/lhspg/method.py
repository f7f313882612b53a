"""`--method lhspg`: LoRAShear's progressive pruning as a method of `prune_model`.

LoRA trains on the pretraining-like corpora (`prune/trained.py`) while `LhspgHook` drives the least
salient groups to exactly zero; then LoRA merges, the zeroed groups are the plan, and compress/export
proceed as for one-shot methods. The export gets `lhspg/steps.jsonl` (loss, sparsity, zeroed groups per
kind per step), `lhspg/curves.png` and `lhspg/training.yaml`.
"""

from __future__ import annotations

from pathlib import Path

from lorashear.prune.context import PruneContext
from lorashear.prune.lhspg.config import LhspgConfig
from lorashear.prune.methods import Method, register_method
from lorashear.prune.plan import ParamCounter, PruningPlan

LOG_FOLDER = "lhspg"


def lhspg_plan(ctx: PruneContext) -> PruningPlan | None:
    """Train with LHSPG to the target ratio; None when the run stopped early (`stop_after_steps`)."""
    from lorashear.importance import get_criterion
    from lorashear.prune.api import tied_aliases
    from lorashear.prune.lhspg.hook import LhspgHook
    from lorashear.prune.trained import base_groups, merge_trained, run_files, run_trained

    c = ctx.config
    options: LhspgConfig = c.method_options
    made: list[LhspgHook] = []

    def hooks(model, graph, total_steps: int) -> list:
        needs_data = get_criterion(options.saliency, **options.saliency_options).needs_data
        data = ctx.calibration().batches if needs_data else None  # e.g. --saliency taylor
        hook = LhspgHook(options, graph, c.ratio, tuple(c.kinds), c.uniform, tied_aliases(model), data)
        hook.check(total_steps)
        made.append(hook)
        return [hook]

    settings = {"method": c.method, "ratio": c.ratio, "kinds": list(c.kinds), "uniform": c.uniform,
                "lhspg": options.to_dict()}
    trained = run_trained(ctx, hooks, settings, desc="lhspg", postfix=progress)
    if not trained.run.finished:
        return None
    hook = made[0]
    merge_trained(trained)
    groups = base_groups(ctx.graph, trained.graph, hook.redundant())
    counter = ParamCounter(ctx.graph, ctx.aliases)
    counter.add(groups)
    run = trained.run
    settings.update({
        "schedule": hook.schedule.to_dict(),
        "saliency": hook.criterion.settings(),
        "training": {**c.training.to_dict(), "steps": run.step, "tokens_seen": run.tokens_seen,
                     "num_processes": run.accelerator.num_processes},
        "calibration": ctx.calibration_record(),
    })
    if ctx.main_process:
        ctx.extra_files.update(run_files(trained.work, LOG_FOLDER, plot_curves))
    return PruningPlan(c.method, c.ratio, c.uniform, list(c.kinds), groups, counter.total, counter.removed_params,
                       {k: v for k, v in settings.items() if k not in ("method", "ratio", "kinds", "uniform")})


def progress(record: dict) -> dict:
    """The progress bar's LHSPG items: period, groups zeroed, live base parameters (the loop adds the loss)."""
    return {"period": record["period"], "zeroed": sum(record["zeroed"].values()),
            "live": f"{record['live_params'] / 1e6:.2f}M"}


def plot_curves(steps: list[dict], path: Path) -> Path | None:
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
    sparsity_ax.set_ylabel("parameters zeroed (%)", color="tab:red")
    fig.suptitle("LHSPG: loss and sparsity")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


register_method(Method("lhspg", lhspg_plan, "lhspg", "auto",
                       "LoRAShear's LHSPG: LoRA training while the least salient groups fade to zero",
                       trained=True, options=LhspgConfig, probe="wanda-sp"))
