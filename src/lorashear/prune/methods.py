"""The pruning methods: each turns a `PruneContext` into a `PlanOutcome` (a `PruningPlan` through the one `select`).

A method is registered once, as peft registers a tuner: `register_method(Method(name, config_cls, plan, ...))`.
`config_cls` is its options, one dataclass (`prune/options.py`): its fields are the recipe keys of `prune:` and
the flags of `lorashear prune`, nothing else lists them. One-shot criterion methods (magnitude, taylor,
wanda-sp, flap) rank groups by a registered criterion, their options that criterion's; `random` ranks them at
random and has none. Trained methods (LHSPG, LoRAPrune) register themselves from their folders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorashear.errors import LorashearError
from lorashear.importance import GroupScores
from lorashear.importance.base import per_parameter_scores
from lorashear.importance.flap import compensate
from lorashear.prune.context import PruneContext
from lorashear.prune.options import CriterionConfig, TrainedConfig, option_names
from lorashear.prune.plan import PruningPlan, select
from lorashear.prune.random import random_plan

# Settings' earlier names -> their names now. `group_divisible` was LHSPG's and LoRAPrune's own copy of
# `multiple_of` (kept MLP/hidden channel counts a multiple of N); recipes and flat configs written then
# (configs/methods/lhspg.yaml, benchmark rows, run folders' recipe.yaml) still say it. Read here, and only here.
OLD_NAMES = {"group_divisible": "multiple_of"}


@dataclass
class PlanOutcome:
    """What a method's plan returns: the plan (None: a trained run stopped early at `stop_after_steps`, and
    `--resume` continues its run folder), files it adds to the export (relative path -> text or bytes), its
    run folder (removed once the export is written), whether this process writes (one of DDP's does), and where
    the merged weights are when they are not the context's model (FSDP: each process held its rows only)."""

    plan: PruningPlan | None
    files: dict[str, str | bytes] = field(default_factory=dict)
    run_dir: Path | None = None
    main_process: bool = True
    model_dir: Path | None = None


@dataclass(frozen=True)
class Method:
    """A pruning method: its options dataclass, how it plans, the criterion it ranks by, its default knowledge rule.

    A trained method (its options extend `TrainedConfig`) trains LoRA on the shared loop (`prune/trained.py`).
    """

    name: str
    config_cls: type | None  # the method's options (one dataclass), or None: it has none
    plan: Callable[[PruneContext], PlanOutcome]
    criterion: str | None = None
    knowledge: str = "auto"  # default --unprunable rule
    description: str = ""
    probe: str | None = None  # criterion of the knowledge analysis, when `criterion` cannot score the untrained model

    @property
    def trained(self) -> bool:
        return self.config_cls is not None and issubclass(self.config_cls, TrainedConfig)

    @property
    def probe_criterion(self) -> str:
        """What the knowledge analysis ranks a cluster's groups by (wanda-sp for methods without a criterion)."""
        return self.probe or self.criterion or "wanda-sp"

    def options(self, values: Any = None) -> Any:
        """The method's options from a mapping of its fields (unknown keys refused, naming the known ones), an
        instance of its `config_cls`, or None (its defaults); None for a method without options."""
        if isinstance(values, Mapping) or values is None:
            values = dict(values or {})
            if self.config_cls is None:
                if values:
                    raise LorashearError(f"method '{self.name}' takes no options; drop {', '.join(sorted(values))}")
                return None
            unknown = sorted(set(values) - set(option_names(self.config_cls)))
            if unknown:
                raise LorashearError(f"unknown option(s) of method '{self.name}': {', '.join(unknown)}; "
                                     f"known: {', '.join(sorted(option_names(self.config_cls)))}")
            return self.config_cls(**values)
        if self.config_cls is None or not isinstance(values, self.config_cls):
            raise LorashearError(f"method '{self.name}' takes {self.config_cls.__name__ if self.config_cls else 'no'} "
                                 f"options, not a {type(values).__name__}")
        return values

    def split(self, values: Mapping[str, Any], own: Iterable[str], where: str) -> tuple[dict, dict]:
        """One flat mapping (a recipe's `prune:` section, a `--config` file) -> (its keys of `own`, the method's
        options). A key of both (a trained run's `seed`, `batch_size`) goes to both; an old name is read as its
        new one (`OLD_NAMES`); an unknown key is one error naming the known ones."""
        values = renamed(values)
        own, mine = set(own), set(option_names(self.config_cls))
        unknown = sorted(set(values) - own - mine)
        if unknown:
            options = (f"method '{self.name}': {', '.join(sorted(mine))}" if mine
                       else f"method '{self.name}' takes no options of its own")
            raise LorashearError(f"unknown key(s) {where}: {', '.join(unknown)}; known: {', '.join(sorted(own))}; "
                                 f"{options}")
        return {k: v for k, v in values.items() if k in own}, {k: v for k, v in values.items() if k in mine}


def renamed(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with every old name (`OLD_NAMES`) read as its new one; both given and different is refused."""
    values = dict(values)
    for old, new in OLD_NAMES.items():
        if old in values:
            value = values.pop(old)
            if new in values and values[new] != value:
                raise LorashearError(f"{new} {values[new]} and {old} {value} disagree; they are one setting "
                                     f"({old} is {new}'s old name): give {new}")
            values[new] = value
    return values


def _random(ctx: PruneContext) -> PlanOutcome:
    c = ctx.config
    return PlanOutcome(random_plan(ctx.graph, c.ratio, list(c.kinds), uniform=c.uniform, seed=c.seed,
                                   aliases=ctx.aliases, multiple_of=c.multiple_of))


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


def _flap(ctx: PruneContext) -> PlanOutcome:
    """FLAP: standardised fluctuation, global widths by default, and bias compensation of what is removed."""
    plan = criterion_plan(ctx, "flap")
    scorer = ctx.scorer("flap", ctx.config.score_options)
    plan.settings["compensated"] = compensate(ctx.model, plan.groups, scorer.stats)
    return PlanOutcome(plan)


def one_shot(criterion: str, description: str,
             plan: Callable[[PruneContext], PlanOutcome] | None = None) -> Method:
    """A one-shot method named after the criterion it ranks by; its options are the criterion's."""
    return Method(criterion, CriterionConfig.of(criterion),
                  plan or (lambda ctx: PlanOutcome(criterion_plan(ctx, criterion))), criterion, "auto", description)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("random", None, _random, None, "none", "uniformly random groups (the floor every criterion must beat)"),
        one_shot("magnitude", "group L2 norm of the weights, no data"),
        one_shot("taylor", "LLM-Pruner's first-order Taylor, one shot"),
        one_shot("wanda-sp", "|W|·‖X‖ from calibration activations"),
        one_shot("flap", "FLAP: standardised fluctuation, bias compensation, no retraining", _flap),
    )
}


def get_method(name: str) -> Method:
    """The registered method `name` (an unknown name is one error naming the known ones)."""
    if name not in METHODS:
        raise LorashearError(f"unknown method '{name}'; choose from {', '.join(METHODS)}")
    return METHODS[name]


def register_method(method: Method) -> Method:
    """Add a method (LHSPG and LoRAPrune register themselves here from their folders)."""
    METHODS[method.name] = method
    return method
