"""`taylor` (LLM-Pruner): first-order Taylor estimate of the loss change when a group is removed.

Gradients of the full weights come from calibration batches, accumulated batch by batch in the
weights' `.grad`, or from the caller (`ScoreContext.gradients`: LHSPG's training steps). Only weights
that some wanted group slices get gradients; LoRA factors are frozen meanwhile (the gradient of W
equals the gradient of W + s·BA). Memory: on the last calibration batch each weight's gradient is
folded into its channel sums the moment it is complete (a post-accumulate-grad hook) and freed, so
no float32 copy of the gradients is ever made; with one calibration batch (samples ≤ batch size) no
gradient outlives its own layer's backward step, with several, each lives until the last batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from lorashear.distributed import is_dtensor, local_rows
from lorashear.errors import LorashearError
from lorashear.importance.base import (
    ChannelSums,
    Criterion,
    GroupScores,
    LocalRows,
    ScoreContext,
    aggregate_channels,
    channel_sums_by_rows,
    effective_weights,
    lora_delta_rows,
    lora_layers,
    needed_dims,
    parameters_named,
    reduce_scores,
    register,
)
from lorashear.importance.calibration import iterate_batches
from lorashear.models import input_device

VARIANTS = ("element", "vector")


@register
@dataclass
class Taylor(Criterion):
    """`element`: Σ|w·g| over the group's weights; `vector`: Σ over the group's rows/columns of |Σ w·g| within
    each (LLM-Pruner's two first-order forms: its vector form sums each weight's slice, then takes |·|)."""

    name: ClassVar[str] = "taylor"
    needs_data: ClassVar[bool] = True
    reads_gradients: ClassVar[bool] = True
    variant: str = "element"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variant not in VARIANTS:
            raise LorashearError(f"taylor: variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")

    def per_channel_abs(self) -> bool:
        return self.variant == "vector"

    def score(self, ctx: ScoreContext) -> GroupScores:
        """Gradients given (`ctx.gradients`): the base class's element path; else calibration passes whose
        gradients are folded into channel sums as each completes (`fold_gradients`)."""
        if ctx.gradients is not None:
            return super().score(ctx)
        needed = needed_dims(ctx)
        lora = lora_layers(ctx.model)

        def fold(name: str, weight: torch.Tensor, grad: torch.Tensor) -> ChannelSums:
            shape, local = weight.shape, None
            if is_dtensor(weight):  # sharded (FSDP): this process's rows, the sums added across processes
                (weight, start), grad = local_rows(weight), local_rows(grad)[0]
                local = (start, weight.shape[0])
                delta = lora_delta_rows(lora[name]) if name in lora else None
            else:
                delta = ctx.lora_delta(name, lora[name]) if name in lora else None

            def rows_of(rows: slice) -> torch.Tensor:  # w·g of some rows, in float32
                w = weight[rows].float() if delta is None else weight[rows].float() + delta[rows].float()
                return self._form(w * grad[rows].float())

            return channel_sums_by_rows(rows_of, shape, needed[name], self.normalize, self.per_channel_abs(),
                                        local=local)

        scored = {name for name in ctx.scored_params() if name in needed}
        reduced = fold_gradients(ctx.model, ctx.require_batches(self.name), scored, fold, ctx.batch_size)
        sums, counts = aggregate_channels(ctx, reduced.items())
        return GroupScores(self.name, reduce_scores(sums, counts, self.reduce), self.settings())

    def elements(self, ctx: ScoreContext) -> Iterator[tuple[str, torch.Tensor]]:
        """w·g (its absolute value for `element`) of every scored weight, from the caller's `ctx.gradients`."""
        grads = ctx.gradients
        if grads is None:
            raise LorashearError("taylor: elements() reads ctx.gradients; score() computes them from calibration")
        params = dict(ctx.model.named_parameters())
        sharded = [n for n in grads if n in params and is_dtensor(params[n])]  # FSDP: this process's rows
        lora = lora_layers(ctx.model) if sharded else {}
        for name in sharded:
            (w, start), g = local_rows(params[name]), local_rows(grads[name])[0]
            delta = lora_delta_rows(lora[name]) if name in lora else None
            w = w.float() if delta is None else w.float() + delta
            yield name, LocalRows(self._form(w * g.float()), start, params[name].shape)
        for name, w in effective_weights(ctx.model, [n for n in grads if n not in sharded]):
            yield name, self._form(w.float() * grads[name].float())

    def _form(self, wg: torch.Tensor) -> torch.Tensor:
        return wg.abs() if self.variant == "element" else wg


# (state_dict name, the weight, its complete gradient) -> what is kept of them
Fold = Callable[[str, torch.Tensor, torch.Tensor], Any]


def fold_gradients(model: nn.Module, batches: torch.Tensor, names: set[str], fold: Fold,
                   batch_size: int = 4) -> dict[str, Any]:
    """∂(mean LM loss over `batches`)/∂w of the named parameters, each handed to `fold(name, w, grad)` as soon as
    it is complete (during the last batch's backward pass) and freed right after: name -> what `fold` returned.
    Nothing gradient-sized is kept beyond the `.grad` that autograd accumulates; requires_grad flags are restored."""
    params = dict(model.named_parameters())
    targets = parameters_named(model, names)
    flags = {n: p.requires_grad for n, p in params.items()}
    was_training = model.training
    model.eval()  # no dropout: the estimate is of the model as it will run
    device = input_device(model)
    folded: dict[str, Any] = {}
    last = {"batch": False}

    def hook_for(name: str) -> Callable[[torch.Tensor], None]:
        def on_grad(param: torch.Tensor) -> None:
            if last["batch"]:
                folded[name] = fold(name, param.detach(), param.grad.detach())
                param.grad = None
        return on_grad

    # Sharded weights (FSDP): a fold adds sums across processes, which must not run inside FSDP's backward; the
    # processes fold their gradient shards after it, one weight after another in name order.
    sharded = any(is_dtensor(p) for p in targets.values())
    handles = []
    try:
        for n, p in params.items():
            p.requires_grad_(n in targets)
            p.grad = None
        if not sharded:
            handles = [p.register_post_accumulate_grad_hook(hook_for(n)) for n, p in targets.items()]
        count = math.ceil(len(batches) / batch_size)
        for i, batch in enumerate(iterate_batches(batches, batch_size, "taylor gradients")):
            last["batch"] = i == count - 1
            batch = batch.to(device)
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss
            (loss * len(batch) / len(batches)).backward()
        if sharded:
            for n, p in sorted(targets.items()):
                if p.grad is not None:
                    folded[n] = fold(n, p.detach(), p.grad.detach())
                    p.grad = None
    finally:
        for handle in handles:
            handle.remove()
        for n, p in params.items():
            p.grad = None
            p.requires_grad_(flags[n])
        model.train(was_training)
    if not folded:
        raise LorashearError("no gradient reached the scored weights; is the model's forward differentiable?")
    return folded


def accumulate_gradients(
    model: nn.Module, batches: torch.Tensor, names: set[str], batch_size: int = 4
) -> dict[str, torch.Tensor]:
    """∂(mean LM loss over `batches`)/∂w for the named parameters, whole (small ones: LoRA factors for lora-grad);
    requires_grad flags are restored after. float() of a float32 gradient is the same tensor: no second copy."""
    return fold_gradients(model, batches, names, lambda name, weight, grad: grad.float(), batch_size)
