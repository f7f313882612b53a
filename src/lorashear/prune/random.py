"""The `random` method: uniformly random scores (a baseline every criterion must beat)."""

from __future__ import annotations

import random as _random

from lorashear.graph.structures import StructureGraph
from lorashear.prune.plan import PruningPlan, select


def random_plan(
    graph: StructureGraph,
    ratio: float,
    kinds: list[str],
    uniform: bool = False,
    seed: int = 0,
    aliases: dict[str, str] | None = None,
    multiple_of: int = 1,
) -> PruningPlan:
    """Remove random groups of `kinds` until `ratio` of the parameters is gone (see `select`)."""
    rng = _random.Random(seed)
    scores = {i: rng.random() for i in range(len(graph.groups))}
    return select(graph, scores, ratio, uniform, kinds, "random", {"seed": seed}, aliases, multiple_of)
