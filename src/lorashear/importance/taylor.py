"""`taylor` (LLM-Pruner): first-order Taylor estimate of the loss change when a group is removed.

Gradients of the full weights come from calibration batches, accumulated batch by batch in
the weights' `.grad` (memory: one gradient per scored weight, never per batch), or from the
caller (`ScoreContext.gradients`: LHSPG's training steps). Only weights
that some wanted group slices get gradients; LoRA factors are frozen meanwhile (the gradient
of W equals the gradient of W + s·BA).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from lorashear.errors import LorashearError
from lorashear.importance.base import Criterion, ScoreContext, effective_weights, parameters_named, register
from lorashear.importance.calibration import iterate_batches, model_device

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

    def elements(self, ctx: ScoreContext) -> Iterator[tuple[str, torch.Tensor]]:
        grads = ctx.gradients
        if grads is None:
            grads = accumulate_gradients(ctx.model, ctx.require_batches(self.name), ctx.scored_params(), ctx.batch_size)
        for name, w in effective_weights(ctx.model, grads):
            wg = w.float() * grads[name]
            yield name, (wg.abs() if self.variant == "element" else wg)


def accumulate_gradients(
    model: nn.Module, batches: torch.Tensor, names: set[str], batch_size: int = 4
) -> dict[str, torch.Tensor]:
    """∂(mean LM loss over `batches`)/∂w for the named parameters; requires_grad flags are restored after."""
    params = dict(model.named_parameters())
    targets = parameters_named(model, names)
    flags = {n: p.requires_grad for n, p in params.items()}
    was_training = model.training
    model.eval()  # no dropout: the estimate is of the model as it will run
    device = model_device(model)
    try:
        for n, p in params.items():
            p.requires_grad_(n in targets)
            p.grad = None
        for batch in iterate_batches(batches, batch_size, "taylor gradients"):
            batch = batch.to(device)
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss
            (loss * len(batch) / len(batches)).backward()
        # float() of a float32 gradient is the same tensor: no second copy of every gradient.
        grads = {n: p.grad.detach().float() for n, p in targets.items() if p.grad is not None}
    finally:
        for n, p in params.items():
            p.grad = None
            p.requires_grad_(flags[n])
        model.train(was_training)
    if not grads:
        raise LorashearError("no gradient reached the scored weights; is the model's forward differentiable?")
    return grads
