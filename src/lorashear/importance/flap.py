"""`flap` (FLAP, An et al., AAAI 2024): standardised fluctuation of the channels a group removes, and
bias compensation of the output projections.

Score of input channel j of a linear layer: Var(X_j) · ‖W[:, j]‖² (W + s·BA with LoRA attached),
X_j over every calibration token. As FLAP's code does, the attention output projection's channel
scores are squared; each layer's scores are then standardised over its channels ((s − mean) / std)
and a group scores the mean over the channels it removes. KV groups, query heads and MLP channels
are input channels of an output projection (FLAP's own structures); a hidden channel is an input
channel of every layer reading the residual stream (q/k/v, gate/up …), our extension. Standardised
scores compare across layers and kinds, so the selection is global: layers end with different widths.
Whole blocks have no standardised score (a projection's channels average to zero) and are refused.

Statistics come from one pass of the dense model: FLAP's code also runs the unpruned layers (layer
by layer only to save GPU memory) and prunes every layer at the end. `compensate` then adds
W[:, removed] · mean(X_removed) to each output projection's bias (`add_output_bias` where there is
none): on the calibration tokens the pruned projection's mean output equals the dense one. Hidden
channels are removed without compensation, as FLAP compensates output projections only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from lorashear.compress import add_output_bias
from lorashear.errors import LorashearError
from lorashear.graph.structures import HIDDEN_CHANNEL, KV_GROUP, MLP_CHANNEL, QUERY_HEAD, Group
from lorashear.importance.base import (
    Criterion,
    GroupScores,
    ScoreContext,
    effective_weights,
    reduce_scores,
    register,
)
from lorashear.importance.calibration import InputStats, collect_input_stats, input_dim, linear_layers

ATTENTION_KINDS = (KV_GROUP, QUERY_HEAD)
# Kinds whose removed channels are an output projection's inputs: those are compensated.
COMPENSATED_KINDS = (*ATTENTION_KINDS, MLP_CHANNEL)
SCORED_KINDS = (*COMPENSATED_KINDS, HIDDEN_CHANNEL)


def input_columns(groups: Iterable[Group]) -> dict[str, list[int]]:
    """Weight (state_dict name) -> the input columns the groups remove from it (LoRA factors left out)."""
    columns: dict[str, set[int]] = {}
    for group in groups:
        inputs = {(name, dim) for name, dim in group.meta.get("inputs", []) if ".lora_" not in name}
        for s in group.slices:
            if (s.param, s.dim) in inputs:
                columns.setdefault(s.param, set()).update(s.index)
    return {name: sorted(ix) for name, ix in columns.items()}


def fluctuation(weight: torch.Tensor, stats: InputStats, dim: int) -> torch.Tensor:
    """Var(X_j) · ‖W[:, j]‖² per input channel j (`dim`: the weight's input dimension), float64."""
    w = weight.detach().double().movedim(dim, 0)
    return stats.variance.to(w.device) * w.reshape(w.shape[0], -1).pow(2).sum(dim=1)


def standardise(scores: torch.Tensor) -> torch.Tensor:
    """(s − mean) / std over the channels (unbiased std, as FLAP); all zeros where they are all equal."""
    std = scores.std()
    return (scores - scores.mean()) / std if std > 0 else torch.zeros_like(scores)


def input_statistics(
    model: nn.Module, groups: Iterable[Group], batches: torch.Tensor, batch_size: int = 4
) -> dict[str, InputStats]:
    """Input statistics (float64, over every calibration token) of the linear layers the groups cut."""
    layers = linear_layers(model)
    names = [n for n in input_columns(groups) if n in layers]  # embeddings are read, not multiplied
    return collect_input_stats(model, batches, names, batch_size, desc="flap statistics")


@register
@dataclass
class Flap(Criterion):
    """Mean over a group's channels of the standardised fluctuation (squared for attention outputs, as FLAP).

    After `score`, `stats` holds the dense statistics that `compensate` needs.
    """

    name: ClassVar[str] = "flap"
    needs_data: ClassVar[bool] = True
    reduce: str = "mean"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.stats: dict[str, InputStats] = {}  # not an option: filled by `score`

    def score(self, ctx: ScoreContext) -> GroupScores:
        wanted = {i: ctx.graph.groups[i] for i in ctx.wanted()}
        other = sorted({g.kind for g in wanted.values()} - set(SCORED_KINDS))
        if other:
            raise LorashearError(
                f"flap scores channels ({', '.join(SCORED_KINDS)}), not {', '.join(other)}: a whole block's "
                "standardised channels average to zero; leave it out of --structures"
            )
        self.stats = input_statistics(ctx.model, wanted.values(), ctx.require_batches(self.name), ctx.batch_size)
        attention_outputs = set(input_columns(g for g in wanted.values() if g.kind in ATTENTION_KINDS))
        layers = linear_layers(ctx.model)
        channel = {}
        for name, w in effective_weights(ctx.model, self.stats):
            s = fluctuation(w, self.stats[name], input_dim(layers[name]))
            # One copy to the CPU per weight, not one device sync per group below.
            channel[name] = standardise(s**2 if name in attention_outputs else s).double().cpu()
        sums, counts = {}, {}
        for i, group in wanted.items():
            cut = {n: ix for n, ix in input_columns([group]).items() if n in channel}
            sums[i] = sum(float(channel[n][ix].sum()) for n, ix in cut.items())
            counts[i] = sum(len(ix) for ix in cut.values())
        return GroupScores(self.name, reduce_scores(sums, counts, self.reduce), self.settings())


@torch.no_grad()
def compensate(model: nn.Module, groups: Iterable[Group], stats: dict[str, InputStats]) -> list[str]:
    """Before `compress`: add W[:, R] · mean(X_R) of the channels R the groups remove from each output
    projection to its bias (`stats`: the dense model's, e.g. `Flap.stats`). Returns the weights' names."""
    columns = input_columns(g for g in groups if g.kind in COMPENSATED_KINDS)
    missing = sorted(set(columns) - set(stats))
    if missing:
        raise LorashearError(f"no calibration statistics for {missing[0]}; score the groups with flap first")
    layers = linear_layers(model)
    add_output_bias(model, [name.removesuffix(".weight") for name in columns])
    for name, w in effective_weights(model, columns):
        layer, dim = layers[name], input_dim(layers[name])
        index = torch.tensor(columns[name], dtype=torch.long, device=w.device)
        removed = w.detach().double().index_select(dim, index).movedim(dim, -1)
        shift = removed @ stats[name].mean.to(w.device)[index]
        layer.bias.add_(shift.to(layer.bias.dtype))
    return list(columns)
