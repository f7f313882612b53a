"""The pruning methods: each turns a `PruneContext` into a `PruningPlan` through the one `select`.

One-shot criterion methods (magnitude, taylor, wanda-sp) rank groups by a registered
criterion; `random` ranks them at random. Trained methods (LHSPG, LoRAPrune) register here too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lorashear.errors import LorashearError
from lorashear.importance import GroupScores
from lorashear.prune.context import PruneContext
from lorashear.prune.plan import PruningPlan, per_parameter_scores, select
from lorashear.prune.random import random_plan


@dataclass(frozen=True)
class Method:
    """A pruning method: how it plans, which criterion it ranks by, its default knowledge rule.

    A trained method (LHSPG, LoRAPrune) trains LoRA on the shared loop (`prune/trained.py`) and has its own
    settings dataclass `options`; its plan returns None when the run stopped early for a later --resume.
    """

    name: str
    plan: Callable[[PruneContext], PruningPlan | None]
    criterion: str | None = None
    knowledge: str = "auto"  # default --unprunable rule
    description: str = ""
    trained: bool = False
    options: type | None = None  # the method's own config dataclass (PruneConfig.method_options fill it)
    probe: str | None = None  # criterion of the knowledge analysis, when `criterion` cannot score the untrained model

    @property
    def probe_criterion(self) -> str:
        """What the knowledge analysis ranks a cluster's groups by (wanda-sp for methods without a criterion)."""
        return self.probe or self.criterion or "wanda-sp"

    def parse_options(self, values: dict[str, Any]) -> Any:
        """The method's own config from `values` (unknown keys refused, naming the known ones); None if it has none."""
        if self.options is None:
            if values:
                raise LorashearError(f"method '{self.name}' takes no options of its own; drop {', '.join(sorted(values))}")
            return None
        known = {f.name for f in dataclasses.fields(self.options)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise LorashearError(f"unknown option(s) of method '{self.name}': {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(known))}")
        return self.options(**values)


def _random(ctx: PruneContext) -> PruningPlan:
    c = ctx.config
    return random_plan(ctx.graph, c.ratio, list(c.kinds), uniform=c.uniform, seed=c.seed, aliases=ctx.aliases,
                       multiple_of=c.multiple_of)


def criterion_plan(ctx: PruneContext, criterion: str) -> PruningPlan:
    """Remove the groups that `criterion` ranks lowest (per parameter they hold, so kinds compare fairly)."""
    c = ctx.config
    scores = ctx.scores(criterion, c.score_options)
    ranking = per_parameter(ctx, scores)
    settings = {"scores": scores.settings, "calibration": ctx.calibration_record()}
    return select(ctx.graph, ranking, c.ratio, c.uniform, list(c.kinds), c.method, settings, ctx.aliases,
                  c.multiple_of)


def per_parameter(ctx: PruneContext, scores: GroupScores) -> dict[int, float]:
    """Scores as importance per parameter held (see `per_parameter_scores`), so kinds compare fairly."""
    return per_parameter_scores(ctx.graph, scores, ctx.aliases)


def _flap(ctx: PruneContext) -> PruningPlan:
    """FLAP: standardised fluctuation, global widths by default, and bias compensation of what is removed."""
    from lorashear.importance.flap import compensate

    plan = criterion_plan(ctx, "flap")
    scorer = ctx.scorer("flap", ctx.config.score_options)
    plan.settings["compensated"] = compensate(ctx.model, plan.groups, scorer.stats)
    return plan


def _by(criterion: str) -> Callable[[PruneContext], PruningPlan]:
    return lambda ctx: criterion_plan(ctx, criterion)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("random", _random, None, "none", "uniformly random groups (the floor every criterion must beat)"),
        Method("magnitude", _by("magnitude"), "magnitude", "auto", "group L2 norm of the weights, no data"),
        Method("taylor", _by("taylor"), "taylor", "auto", "LLM-Pruner's first-order Taylor, one shot"),
        Method("wanda-sp", _by("wanda-sp"), "wanda-sp", "auto", "|W|·‖X‖ from calibration activations"),
        Method("flap", _flap, "flap", "auto", "FLAP: standardised fluctuation, bias compensation, no retraining"),
    )
}


def get_method(name: str) -> Method:
    """The registered method `name` (an unknown name is one error naming the known ones)."""
    if name not in METHODS:
        raise LorashearError(f"unknown method '{name}'; choose from {', '.join(METHODS)}")
    return METHODS[name]


def register_method(method: Method) -> Method:
    """Add a method (LHSPG, LoRAPrune, FLAP, ... register themselves here)."""
    METHODS[method.name] = method
    return method
