"""Stage 4: choose groups to remove. Every method produces a `PruningPlan` through `select`."""

from lorashear.prune.plan import ParamCounter, PruningPlan, select
from lorashear.prune.random import random_plan

# Method name -> plan function (graph, ratio, kinds, uniform, seed, aliases) -> PruningPlan.
METHODS = {"random": random_plan}

__all__ = ["METHODS", "ParamCounter", "PruningPlan", "random_plan", "select"]
