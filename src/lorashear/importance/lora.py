"""LoRAShear's saliency proxies: the LoRA product s·BA stands in for a gradient (no data needed).

`lora-taylor` |Σ_g W⊙BA| (first order), `lora-taylor2` ½(Σ_g W⊙BA)², `lora-cos` cos(W_g, (BA)_g)+1, and
`lhspg`, the authors' mix: each proxy made per parameter (so kinds compare), divided by its global L2
norm, and summed with weights (default: equal over the three above and `magnitude`; any registered
criterion may join). W is the base weight; BA includes the peft scaling s. Only parameters that carry
LoRA enter the products: a group's norm and embedding slices have no BA.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch

from lorashear.errors import LorashearError
from lorashear.graph.counting import group_sizes
from lorashear.importance.base import (
    CRITERIA,
    Criterion,
    GroupScores,
    ScoreContext,
    aggregate,
    get_criterion,
    lora_layers,
    per_parameter_scores,
    register,
)

DEFAULT_MIX = "lora-taylor:1,lora-taylor2:1,lora-cos:1,magnitude:1"


def lora_products(
    ctx: ScoreContext, criterion: str, element: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> Iterator[tuple[str, torch.Tensor]]:
    """(base weight name, element(W, s·BA)) for every LoRA layer; a clear error when the model has none."""
    layers = lora_layers(ctx.model)
    state = ctx.model.state_dict()
    found = False
    for name, layer in layers.items():
        delta = ctx.lora_delta(name, layer)
        if delta is None:
            continue
        found = True
        yield name, element(state[name].float(), delta.float())
    if not found:
        raise LorashearError(
            f"criterion '{criterion}' scores by the LoRA product BA, but the model has no active LoRA adapter; "
            "attach LoRA (a peft adapter folder or a trained method) or choose another criterion"
        )


@register
@dataclass
class LoraTaylor(Criterion):
    """|Σ_g W⊙s·BA|: the signed sum over all of a group's slices, then its absolute value."""

    name: ClassVar[str] = "lora-taylor"
    reduce: str = "abs-sum"

    def elements(self, ctx: ScoreContext) -> Iterator[tuple[str, torch.Tensor]]:
        return lora_products(ctx, self.name, torch.mul)


@register
@dataclass
class LoraTaylor2(LoraTaylor):
    """½(Σ_g W⊙s·BA)²: the second-order form of the same sum."""

    name: ClassVar[str] = "lora-taylor2"
    reduce: str = "square"


@register
@dataclass
class LoraCos(Criterion):
    """cos(W_g, (s·BA)_g) + 1 in [0, 2]: whether LoRA grows the group (2) or shrinks it (0); 1 where BA_g = 0."""

    name: ClassVar[str] = "lora-cos"
    reduce: str = "mean"  # already independent of the group's size

    def score(self, ctx: ScoreContext) -> GroupScores:
        dot, _ = aggregate(ctx, lora_products(ctx, self.name, torch.mul))
        ww, _ = aggregate(ctx, lora_products(ctx, self.name, lambda w, d: w * w))
        dd, _ = aggregate(ctx, lora_products(ctx, self.name, lambda w, d: d * d))
        scores = {i: _cosine(dot[i], ww[i], dd[i]) + 1.0 for i in dot}
        return GroupScores(self.name, scores, self.settings())


def _cosine(dot: float, ww: float, dd: float) -> float:
    norms = math.sqrt(max(ww, 0.0) * max(dd, 0.0))
    return dot / norms if norms > 0 else 0.0


@register
@dataclass
class Lhspg(Criterion):
    """Σ_k w_k·p_k/‖p_k‖: a weighted mix of proxies `p_k`, each per parameter and divided by its global L2 norm.

    `weights`: "name:weight,..." (or a dict) of registered criteria; weights are made to sum to 1.
    """

    name: ClassVar[str] = "lhspg"
    reduce: str = "mean"  # the mix is per parameter already; selection must not divide again
    weights: str | dict = DEFAULT_MIX
    per_parameter: bool = True
    mix: dict[str, float] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.mix = parse_weights(self.weights)
        # A mix with a data-driven proxy (e.g. taylor) needs calibration data like that proxy.
        self.needs_data = any(CRITERIA[n].needs_data for n in self.mix)

    def settings(self) -> dict:
        return {"criterion": self.name, "reduce": self.reduce, "weights": self.mix,
                "per_parameter": self.per_parameter}

    def score(self, ctx: ScoreContext) -> GroupScores:
        total: dict[int, float] = {i: 0.0 for i in ctx.wanted()}
        ctx = replace(ctx, deltas={} if ctx.deltas is None else ctx.deltas)  # s·BA once per weight for every proxy
        if "group_sizes" not in ctx.memo:  # the same for every proxy (and every call on this graph)
            ctx.memo["group_sizes"] = group_sizes(ctx.graph, ctx.wanted(), ctx.aliases)
        for proxy, weight in self.mix.items():
            scores = get_criterion(proxy).score(ctx)
            values = (per_parameter_scores(ctx.graph, scores, ctx.aliases, ctx.memo["group_sizes"]) if self.per_parameter
                      else scores.scores)
            norm = math.sqrt(sum(v * v for v in values.values()))
            for i, v in values.items():
                total[i] += weight * (v / norm if norm > 0 else 0.0)
        return GroupScores(self.name, total, self.settings())


def parse_weights(weights: str | dict) -> dict[str, float]:
    """"a:1,b:2" or {"a": 1, "b": 2} -> {"a": 1/3, "b": 2/3}, every name a registered criterion."""
    if isinstance(weights, str):
        pairs = {}
        for item in filter(None, (part.strip() for part in weights.split(","))):
            name, sep, value = item.partition(":")
            try:
                pairs[name.strip()] = float(value) if sep else 1.0
            except ValueError as err:
                raise LorashearError(f"lhspg weights: {item!r} is not name:number") from err
        weights = pairs
    unknown = sorted(n for n in weights if n not in CRITERIA or n == Lhspg.name)
    if unknown:
        raise LorashearError(
            f"lhspg weights name {', '.join(unknown)}; mix registered criteria other than lhspg: "
            f"{', '.join(sorted(set(CRITERIA) - {Lhspg.name}))}"
        )
    if any(not math.isfinite(w) or w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise LorashearError(f"lhspg weights must be non-negative with a positive sum, got {weights}")
    total = sum(weights.values())
    return {n: w / total for n, w in weights.items() if w > 0}
