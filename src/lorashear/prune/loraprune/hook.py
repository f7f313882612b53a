"""`LorapruneHook`: LoRAPrune's iterative pruning as a hook of the shared training loop.

Every optimiser step, before the optimizer moves: the `lora-grad` criterion scores every group of
the chosen kinds from the step's synchronised, clipped LoRA gradients, and each group's moving average
s ← β·s + (1 − β)·s_new (from 0) takes it in. After the step, every `mask_every` steps (and at the
first cool-down step, so the target is met) the plan's `select` masks the lowest-scored groups up to
the cubic schedule's ratio, the masked groups forced in (masks are cumulative). A mask zeroes the
group's base-weight slices, its LoRA slices and their Adam moments; the masked slices' gradients are
zeroed before each later step and their LoRA slices after it, so nothing revives (a wholly masked group
is a dead branch whose gradients vanish anyway; the zeroing guards it). Scores come from
gradients and weights every DDP process shares, ties break by group index: every process masks the same.
At the end the masked set is the plan (`plan()`), for compress/export to remove physically.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from lorashear.errors import LorashearError
from lorashear.graph.counting import ParamCounter
from lorashear.graph.structures import StructureGraph
from lorashear.importance import GroupScores, ScoreContext
from lorashear.importance.base import per_parameter_scores
from lorashear.prune.loraprune.config import LorapruneConfig
from lorashear.prune.loraprune.schedule import cubic_ratio
from lorashear.prune.plan import PruningPlan, removal_summary, select_more
from lorashear.prune.variables import GroupVariables, zero_at
from lorashear.train.hooks import TrainHook

if TYPE_CHECKING:
    from lorashear.train.loop import TrainRun

METHOD = "loraprune"


class LorapruneHook(TrainHook):
    """Iterative masking of `graph`'s groups of `kinds` to `ratio` of the base parameters."""

    def __init__(self, config: LorapruneConfig, graph: StructureGraph, ratio: float, kinds: tuple[str, ...],
                 uniform: bool = False, aliases: dict[str, str] | None = None, multiple_of: int = 1) -> None:
        self.config, self.graph, self.ratio, self.kinds = config, graph, ratio, tuple(kinds)
        self.uniform, self.aliases, self.multiple_of = uniform, aliases or {}, multiple_of
        self.criterion = config.criterion()
        self.scores = {i: 0.0 for i, g in enumerate(graph.groups) if g.kind in self.kinds}  # moving averages
        self.masked: set[int] = set()
        self.mask_ratio = 0.0  # the scheduled ratio the masks were last chosen at
        self.total_steps = 0
        self.variables: GroupVariables | None = None
        self._summary: tuple[int, dict] | None = None  # (len(masked), step-log keys) cache

    # ---------------------------------------------------------------- hook interface

    def check(self, total_steps: int) -> None:
        """Refuse a run without steps or an unreachable ratio (before any work, as LhspgHook.check)."""
        if total_steps < 1:
            raise LorashearError("LoRAPrune needs at least one optimiser step; train on more tokens")
        self.total_steps = total_steps
        self._choose(dict.fromkeys(self.scores, 0.0), self.ratio)

    def on_start(self, run: TrainRun) -> None:
        self.check(run.total_steps)
        self.variables = GroupVariables(run.unwrapped, self._groups(self.masked))
        self.variables.zero_many(sorted(self.masked), run.optimizer)  # resumed: masks hold on restored weights

    def before_optimizer_step(self, run: TrainRun) -> None:
        ctx = ScoreContext(run.unwrapped, self.graph, aliases=self.aliases, kinds=self.kinds)
        new = self.criterion.score(ctx).scores
        if all(math.isfinite(v) for v in new.values()):  # an overflowing step (fp16) must not poison the averages
            beta = self.config.beta
            for i, v in new.items():
                self.scores[i] = beta * self.scores[i] + (1.0 - beta) * v
        for i in self.masked:  # masked slices get no update: Adam's moments stay zero
            for param, index in self.variables.lora_slices(i):
                if param.grad is not None:
                    zero_at(param.grad, index)

    def after_step(self, run: TrainRun, record: dict) -> None:
        scheduled = self.scheduled_ratio(run.step - 1)
        if scheduled > self.mask_ratio and ((run.step - 1) % self.config.mask_every == 0 or scheduled >= self.ratio):
            self._mask(scheduled, run.optimizer)
        # Weight decay or a stale moment may have moved a masked LoRA slice.
        self.variables.zero_lora_many(sorted(self.masked), run.optimizer)
        record.update(scheduled_ratio=scheduled, **self.summary())

    def on_end(self, run: TrainRun) -> None:
        """A finished run ends at the target even when the schedule's last mask fell short (few steps)."""
        if run.step >= self.total_steps and self.mask_ratio < self.ratio:
            self._mask(self.ratio, run.optimizer)

    def state_dict(self) -> dict:
        return {"scores": {str(i): v for i, v in self.scores.items()}, "masked": sorted(self.masked),
                "mask_ratio": self.mask_ratio}

    def load_state_dict(self, state: dict) -> None:
        self.scores = {int(i): float(v) for i, v in state["scores"].items()}
        self.masked = {int(i) for i in state["masked"]}
        self.mask_ratio = float(state["mask_ratio"])
        self._summary = None

    # ---------------------------------------------------------------- pieces

    def scheduled_ratio(self, step: int) -> float:
        """The cubic schedule's ratio at the 0-based optimiser step `step`."""
        return cubic_ratio(step, self.total_steps, self.ratio, self.config.warmup_share, self.config.cooldown_share)

    def _groups(self, indices) -> dict:
        return {i: self.graph.groups[i] for i in indices}

    def _choose(self, scores: dict[int, float], ratio: float) -> list[int]:
        ranking = per_parameter_scores(self.graph, GroupScores(self.criterion.name, scores, self.criterion.settings()),
                                       self.aliases)  # heads and channels compare per parameter
        return select_more(self.graph, ranking, self.masked, ratio, self.uniform, list(self.kinds), METHOD,
                           self.aliases, self.multiple_of)

    def _mask(self, ratio: float, optimizer) -> None:
        """Mask the lowest-scored unmasked groups until `ratio` of the base parameters is masked."""
        chosen = self._choose(self.scores, ratio)
        self.variables.add(self._groups(chosen))
        self.variables.zero_many(chosen, optimizer)
        self.masked.update(chosen)
        self.mask_ratio = ratio

    def summary(self) -> dict:
        """The step log's LoRAPrune keys: masked groups per kind, sparsity, live base parameters."""
        if self._summary is None or self._summary[0] != len(self.masked):
            self._summary = (len(self.masked), removal_summary(self.graph, self.masked, self.aliases, "masked"))
        return self._summary[1]

    def plan(self) -> PruningPlan:
        """The masked groups as the pruning plan (what compress/export removes)."""
        counter = ParamCounter(self.graph, self.aliases)
        groups = [self.graph.groups[i] for i in sorted(self.masked)]
        counter.add(groups)
        settings = {**self.config.own_options(), "criterion": self.criterion.settings()}
        return PruningPlan(METHOD, self.ratio, self.uniform, list(self.kinds), groups, counter.total,
                           counter.removed_params, settings)
