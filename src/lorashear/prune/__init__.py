"""Stage 4: choose groups to remove. Every method produces a `PruningPlan` through `select`."""

from lorashear.prune.context import PruneContext
from lorashear.prune.methods import METHODS, Method, PlanOutcome, criterion_plan, get_method, register_method
from lorashear.prune.options import CriterionConfig, TrainedConfig
from lorashear.prune.plan import PruningPlan, select
from lorashear.prune.random import random_plan

# Trained methods register themselves on import (after METHODS exists): a method is its folder plus this line.
from lorashear.prune.lhspg import method as _lhspg_method  # noqa: E402, F401  isort: skip
from lorashear.prune.loraprune import method as _loraprune_method  # noqa: E402, F401  isort: skip

__all__ = [
    "METHODS",
    "CriterionConfig",
    "Method",
    "PlanOutcome",
    "PruneContext",
    "PruningPlan",
    "TrainedConfig",
    "criterion_plan",
    "get_method",
    "random_plan",
    "register_method",
    "select",
]
