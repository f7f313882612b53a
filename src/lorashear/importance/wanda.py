"""`wanda-sp` (Wanda, structured): |W|·‖X‖₂ of each weight's input channel, from calibration activations.

One forward pass with hooks on every linear layer; no gradients. Weights that are not read by
a linear layer (norms, embeddings, biases) contribute nothing: a group is scored by its linear weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch

from lorashear.importance.base import Criterion, ScoreContext, effective_weights, register
from lorashear.importance.calibration import collect_input_stats, input_dim, linear_layers


@register
@dataclass
class WandaSP(Criterion):
    """Σ over the group's linear weights of |w_ij|·‖X_j‖₂ (X: the layer's input over all calibration tokens)."""

    name: ClassVar[str] = "wanda-sp"
    needs_data: ClassVar[bool] = True

    def elements(self, ctx: ScoreContext) -> Iterator[tuple[str, torch.Tensor]]:
        scored = ctx.scored_params()
        layers = linear_layers(ctx.model)
        names = [n for n in layers if ctx.aliases.get(n, n) in scored]
        stats = collect_input_stats(ctx.model, ctx.require_batches(self.name), names, ctx.batch_size,
                                    desc="wanda-sp activations")
        for name, w in effective_weights(ctx.model, names):
            d = input_dim(layers[name])
            shape = [1] * w.dim()
            shape[d] = -1
            # A tied lm_head reads the hidden channels like any linear layer: its scores count under the
            # embedding's name (the one `aggregate` reads; the embedding lookup itself has no input norm).
            yield ctx.aliases.get(name, name), w.float().abs() * stats[name].norm.float().to(w.device).view(shape)
