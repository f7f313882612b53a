"""`magnitude`: how large a group's weights are (no data). The baseline every data-driven criterion must beat."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch

from lorashear.importance.base import Criterion, ScoreContext, effective_weights, register


@register
@dataclass
class Magnitude(Criterion):
    """Group L2 norm √Σw² (`reduce=l2`, default) or mean magnitude mean|w| (`reduce=mean`), of W + s·BA."""

    name: ClassVar[str] = "magnitude"
    reduce: str = "l2"

    def elements(self, ctx: ScoreContext) -> Iterator[tuple[str, torch.Tensor]]:
        square = self.reduce == "l2"
        for name, w in effective_weights(ctx.model, sorted(ctx.scored_params()), ctx):
            yield name, (w.float() ** 2 if square else w.float().abs())
