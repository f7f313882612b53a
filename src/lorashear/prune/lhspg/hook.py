"""`LhspgHook`: LoRAShear's Algorithm 4 as a hook of the shared training loop.

After each optimiser step: in warm-up nothing; at the first period's first step (later periods: at
the previous period's last step, before its merge) the least salient still-important prunable groups
become redundant (the plan's `select` on saliency scores, the cumulative target ratio·p/P, earlier
redundant groups forced in); every step of the period they
take an LHSPG projection (or the released fade); at the period's last step they are set exactly to
zero and s·BA merges into W. Redundant groups stay zero: their LoRA slices and Adam moments are
zeroed after every later step. Everything is computed from weights that every DDP process shares,
with ties broken by group index, so every process edits its copy identically.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from lorashear.graph.structures import StructureGraph
from lorashear.importance import ScoreContext, get_criterion
from lorashear.prune.lhspg.config import LhspgConfig
from lorashear.prune.lhspg.schedule import Schedule
from lorashear.prune.lhspg.step import fade_many, merge_lora, project_many, step_size
from lorashear.prune.plan import per_parameter_scores, removal_summary, select_more
from lorashear.prune.variables import GroupVariables
from lorashear.train.hooks import TrainHook

if TYPE_CHECKING:
    from lorashear.train.loop import TrainRun


class LhspgHook(TrainHook):
    """Progressive structured pruning of `graph`'s groups of `kinds` to `ratio` of the base parameters."""

    def __init__(self, config: LhspgConfig, graph: StructureGraph, ratio: float, kinds: tuple[str, ...],
                 uniform: bool = False, aliases: dict[str, str] | None = None,
                 batches: torch.Tensor | None = None) -> None:
        self.config, self.graph, self.ratio, self.kinds = config, graph, ratio, tuple(kinds)
        self.uniform, self.aliases, self.batches = uniform, aliases or {}, batches
        self.criterion = get_criterion(config.saliency, **config.saliency_options)
        self.schedule: Schedule | None = None
        self.periods: list[list[int]] = []  # redundant groups chosen at each period's start
        self.zeroed: set[int] = set()
        self.start_norms: dict[int, float] = {}  # ‖x_g‖ at the group's first step (the constant λ rule)
        self.variables: GroupVariables | None = None
        self._sparsity: tuple[int, dict] | None = None  # (len(zeroed), summary) cache
        self._period = 0  # periods begun, for the step log
        self._score_memo: dict = {}  # what scoring derives from the graph alone, kept across periods

    # ---------------------------------------------------------------- hook interface

    def check(self, total_steps: int) -> Schedule:
        """The schedule of a run of `total_steps`; refuses too few steps or an unreachable ratio (before any work)."""
        schedule = Schedule.plan(total_steps, self.config.warmup_share, self.config.periods)
        self._select({i: 0.0 for i, g in enumerate(self.graph.groups) if g.kind in self.kinds}, self.ratio)
        return schedule

    def on_start(self, run: TrainRun) -> None:
        self.schedule = self.check(run.total_steps)
        self.variables = GroupVariables(run.unwrapped, self._groups(self.redundant()))

    def after_step(self, run: TrainRun, record: dict) -> None:
        model, optimizer = run.unwrapped, run.optimizer
        position = self.schedule.position(run.step - 1)
        self._period = self.schedule.period_of(run.step - 1)
        current: list[int] = []
        if position is not None:
            period, t = position
            if period == len(self.periods):
                self._start_period(model, period)
            current = self.periods[period]
            last = t == self.schedule.period_steps - 1
            # The period's end zeroes all its groups; otherwise those zeroed early by the half-space test stay zero.
            done = current if last else [i for i in current if i in self.zeroed]
            self.variables.zero_many(done, optimizer)
            self.zeroed.update(done)
            if not last:
                self._advance([i for i in current if i not in self.zeroed], t, optimizer)
            if last and period + 1 < self.schedule.periods:
                # The next period's groups are chosen now, while BA still holds this period's training
                # (a reset merge below would leave the proxies only one step of LoRA to read).
                self._start_period(model, period + 1)
            if last and self.config.merge == "reset":
                merge_lora(model, optimizer)
        # Zeros stay zero: the optimizer step revived their LoRA slices (one write per factor for all of them).
        self.variables.zero_lora_many(sorted(self.zeroed.difference(current)), optimizer)
        record.update(self.summary())

    def on_end(self, run: TrainRun) -> None:
        """At the end of the schedule every redundant group is exactly zero (an interrupted run is left as is)."""
        if run.step < self.schedule.total_steps:
            return
        self.variables.zero_many(self.redundant(), run.optimizer)
        self.zeroed.update(self.redundant())

    def state_dict(self) -> dict:
        return {"periods": [list(p) for p in self.periods], "zeroed": sorted(self.zeroed),
                "start_norms": {str(i): v for i, v in self.start_norms.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.periods = [list(p) for p in state["periods"]]
        self.zeroed = set(state["zeroed"])
        self.start_norms = {int(i): float(v) for i, v in state["start_norms"].items()}
        self._sparsity = None

    # ---------------------------------------------------------------- pieces

    def redundant(self) -> list[int]:
        return [i for p in self.periods for i in p]

    def _groups(self, indices) -> dict:
        return {i: self.graph.groups[i] for i in indices}

    def _start_period(self, model, period: int) -> None:
        """Move the least salient still-important groups into the redundant set (cumulative ratio·(p+1)/P)."""
        ctx = ScoreContext(model, self.graph, self.batches, aliases=self.aliases, kinds=self.kinds,
                           memo=self._score_memo)
        ranking = per_parameter_scores(self.graph, self.criterion.score(ctx), self.aliases)
        target = self.ratio * (period + 1) / self.config.periods
        chosen = self._select(ranking, target)
        self.periods.append(chosen)
        self.variables.add(self._groups(chosen))

    def _select(self, ranking: dict[int, float], ratio: float) -> list[int]:
        """Groups the plan's `select` adds to the redundant ones (forced in first) to reach `ratio`, in index order."""
        return select_more(self.graph, ranking, set(self.redundant()), ratio, self.uniform, list(self.kinds), "lhspg",
                           aliases=self.aliases, multiple_of=self.config.group_divisible)

    def _advance(self, groups: list[int], t: int, optimizer) -> None:
        """One step of the period's live redundant groups towards zero."""
        steps = self.schedule.period_steps
        if self.config.variant == "fade":
            fade_many(self.variables, groups, t, steps)
            return

        def step_sizes(wave: list[int], norms: torch.Tensor) -> torch.Tensor:
            start = torch.tensor([self.start_norms.setdefault(i, n) for i, n in zip(wave, norms.tolist(), strict=True)],
                                 dtype=norms.dtype, device=norms.device)
            return step_size(self.config.lambda_rule, norms, start, t, steps)

        self.zeroed.update(project_many(self.variables, groups, step_sizes, self.config.epsilon, optimizer))

    def summary(self) -> dict:
        """The step log's LHSPG keys: period, zeroed groups per kind, sparsity, live base parameters."""
        if self._sparsity is None or self._sparsity[0] != len(self.zeroed):
            self._sparsity = (len(self.zeroed), removal_summary(self.graph, self.zeroed, self.aliases, label="zeroed"))
        return {"period": self._period, **self._sparsity[1]}
