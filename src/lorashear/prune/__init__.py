"""Stage 4: choose groups to remove. Every method produces a `PruningPlan` through `select`."""

from lorashear.prune.context import PruneContext
from lorashear.prune.methods import METHODS, Method, criterion_plan, register_method
from lorashear.prune.plan import ParamCounter, PruningPlan, group_sizes, select
from lorashear.prune.random import random_plan

# Trained methods register themselves on import (after METHODS exists).
from lorashear.prune.lhspg import method as _lhspg_method  # noqa: E402, F401  isort: skip
from lorashear.prune.loraprune import method as _loraprune_method  # noqa: E402, F401  isort: skip

__all__ = [
    "METHODS",
    "Method",
    "ParamCounter",
    "PruneContext",
    "PruningPlan",
    "criterion_plan",
    "group_sizes",
    "random_plan",
    "register_method",
    "select",
]
