"""`LhspgHook`: LoRAShear's Algorithm 4 as a hook of the shared training loop.

After each optimiser step: in warm-up nothing; at the first period's first step (later periods: at
the previous period's last step, before its merge) the least salient still-important prunable groups
become redundant (the plan's `select` on saliency scores, the cumulative target ratio·p/P, earlier
redundant groups forced in); every step of the period they
take an LHSPG projection (or the released fade); at the period's last step they are set exactly to
zero and s·BA merges into W. Redundant groups stay zero: their LoRA slices and Adam moments are
zeroed after every later step. Everything is computed from weights that every DDP process shares,
with ties broken by group index, so every process edits its copy identically.

With `saliency_steps` N a gradient saliency (taylor) scores from the training itself: the frozen weights
the groups slice take gradients on the N steps that end at each choice, summed in their own `.grad` (the
optimizer never holds them; memory: one gradient per weight), averaged over the steps and over DDP
processes at the choice, instead of extra passes over calibration batches. Those steps run without dropout
(the model as it will run, as calibration passes score it): a weight's gradient then needs the same input that
its LoRA factor A already keeps for backward, not a second, dropped-out copy of every layer's input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from lorashear.distributed import is_dtensor
from lorashear.errors import LorashearError
from lorashear.graph.structures import StructureGraph
from lorashear.importance import ScoreContext, get_criterion
from lorashear.importance.base import per_parameter_scores
from lorashear.prune.lhspg.config import LhspgConfig
from lorashear.prune.lhspg.schedule import Schedule
from lorashear.prune.lhspg.step import fade_many, merge_lora, project_many, step_size
from lorashear.prune.plan import removal_summary, select_more
from lorashear.prune.variables import GroupVariables
from lorashear.train.hooks import TrainHook

if TYPE_CHECKING:
    from lorashear.train.loop import TrainRun


class LhspgHook(TrainHook):
    """Progressive structured pruning of `graph`'s groups of `kinds` to `ratio` of the base parameters."""

    def __init__(self, config: LhspgConfig, graph: StructureGraph, ratio: float, kinds: tuple[str, ...],
                 uniform: bool = False, aliases: dict[str, str] | None = None,
                 batches: torch.Tensor | None = None, multiple_of: int = 1) -> None:
        self.config, self.graph, self.ratio, self.kinds = config, graph, ratio, tuple(kinds)
        self.uniform, self.aliases, self.batches, self.multiple_of = uniform, aliases or {}, batches, multiple_of
        self.criterion = get_criterion(config.saliency, **config.saliency_options)
        self.schedule: Schedule | None = None
        self.periods: list[list[int]] = []  # redundant groups chosen at each period's start
        self.zeroed: set[int] = set()
        self.start_norms: dict[int, float] = {}  # ‖x_g‖ at the group's first step (the constant λ rule)
        self.variables: GroupVariables | None = None
        self._sparsity: tuple[int, dict] | None = None  # (len(zeroed), summary) cache
        self._period = 0  # periods begun, for the step log
        self._score_memo: dict = {}  # what scoring derives from the graph alone, kept across periods
        self.grad_steps = 0  # saliency_steps: steps of the current window summed in the weights' .grad so far
        self._grads_used = False  # a choice of this step read the window's gradients: freed after the step
        self._grad_params: dict[str, torch.nn.Parameter] = {}
        self._window_steps: frozenset[int] = frozenset()  # 0-based steps whose weight gradients a choice reads
        self._resumed_grads: dict[str, torch.Tensor] = {}  # a checkpoint's window, until on_start
        self._sharded_names: list[str] = []  # a checkpoint's sharded window (FSDP), until it is read
        self._quieted: list[torch.nn.Dropout] = []  # dropout modules switched off for a window step

    # ---------------------------------------------------------------- hook interface

    def check(self, total_steps: int) -> Schedule:
        """The schedule of a run of `total_steps`; refuses too few steps or an unreachable ratio (before any work)."""
        schedule = Schedule.plan(total_steps, self.config.warmup_share, self.config.periods)
        self._select({i: 0.0 for i, g in enumerate(self.graph.groups) if g.kind in self.kinds}, self.ratio)
        return schedule

    def on_start(self, run: TrainRun) -> None:
        self.schedule = self.check(run.total_steps)
        self.variables = GroupVariables(run.unwrapped, self._groups(self.redundant()))
        if self.config.saliency_steps is not None:
            k = self.config.saliency_steps
            self._window_steps = frozenset(s - i for s in self.schedule.selection_steps() for i in range(k) if s >= i)
            self._grad_params = ScoreContext(run.unwrapped, self.graph, kinds=self.kinds).scored_parameters()
            for name, g in self._resumed_grads.items():
                self._grad_params[name].grad = g.to(self._grad_params[name].device)
            self._resumed_grads = {}

    def before_step(self, run: TrainRun) -> None:
        """In a saliency window the groups' frozen weights take gradients this step, added to their .grad, and
        dropout is off."""
        if self._in_window(run.step):
            self._quieted = [m for m in run.unwrapped.modules() if isinstance(m, torch.nn.Dropout) and m.training]
            for m in self._quieted:
                m.eval()
            scale = _loss_scale(run)
            for p in self._grad_params.values():
                p.requires_grad_(True)
                if p.grad is not None and scale != 1.0:
                    p.grad.mul_(scale)  # fp16: this step's gradients arrive scaled; so must the sum be

    def before_optimizer_step(self, run: TrainRun) -> None:
        """A window's step is summed; the weights are frozen again (gradient clipping never saw them), dropout is on."""
        if not self._in_window(run.step):
            return
        for m in self._quieted:
            m.train()
        self._quieted = []
        scale = _loss_scale(run)
        for p in self._grad_params.values():
            p.requires_grad_(False)
            if p.grad is not None and scale != 1.0:
                p.grad.div_(scale)
        if scale != 1.0 and not all(bool(torch.isfinite(p.grad).all()) for p in self._grad_params.values()
                                    if p.grad is not None):
            self._free_gradients()  # an overflowing fp16 step (the optimizer skips it too) spoils the sum
            return
        self.grad_steps += 1

    def after_step(self, run: TrainRun, record: dict) -> None:
        model, optimizer = run.unwrapped, run.optimizer
        position = self.schedule.position(run.step - 1)
        self._period = self.schedule.period_of(run.step - 1)
        current: list[int] = []
        if position is not None:
            period, t = position
            if period == len(self.periods):
                self._start_period(run, period)
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
                self._start_period(run, period + 1)
            if last and self.config.merge == "reset":
                merge_lora(model, optimizer)
        # Zeros stay zero: the optimizer step revived their LoRA slices (one write per factor for all of them).
        self.variables.zero_lora_many(sorted(self.zeroed.difference(current)), optimizer)
        if self._grads_used:  # read by this step's choice(s): freed, the next window starts afresh
            self._free_gradients()
        record.update(self.summary())
        if self.config.saliency_steps is not None:
            record["saliency_window"] = self._in_window(run.step - 1)  # for the time of a window step vs others

    def on_end(self, run: TrainRun) -> None:
        """At the end of the schedule every redundant group is exactly zero (an interrupted run is left as is)."""
        if run.step < self.schedule.total_steps:
            return
        self.variables.zero_many(self.redundant(), run.optimizer)
        self.zeroed.update(self.redundant())

    def state_dict(self) -> dict:
        # A window cut by the checkpoint resumes with its gradients so far (sharded ones: `sharded_state_dict`).
        window = self._window()
        sharded = any(is_dtensor(g) for g in window.values())
        return {"periods": [list(p) for p in self.periods], "zeroed": sorted(self.zeroed),
                "start_norms": {str(i): v for i, v in self.start_norms.items()},
                "saliency_grads": {} if sharded else {n: g.cpu() for n, g in window.items()},
                "saliency_grad_names": sorted(window) if sharded else [],
                "saliency_grad_steps": self.grad_steps if window else 0}

    def load_state_dict(self, state: dict) -> None:
        self.periods = [list(p) for p in state["periods"]]
        self.zeroed = set(state["zeroed"])
        self.start_norms = {int(i): float(v) for i, v in state["start_norms"].items()}
        self._resumed_grads = dict(state.get("saliency_grads", {}))
        self._sharded_names = list(state.get("saliency_grad_names", []))
        self.grad_steps = state.get("saliency_grad_steps", 0)
        self._sparsity = None

    def sharded_state_dict(self, run: TrainRun) -> dict:
        """FSDP: the window's gradient shards; after a resume's `load_state_dict`, empty ones to read them into."""
        if self._sharded_names:
            params = ScoreContext(run.unwrapped, self.graph, kinds=self.kinds).scored_parameters()
            return {n: torch.zeros_like(params[n]) for n in self._sharded_names}
        return {n: g for n, g in self._window().items() if is_dtensor(g)}

    def load_sharded_state_dict(self, state: dict) -> None:
        if state:
            self._resumed_grads = dict(state)
        self._sharded_names = []

    def _window(self) -> dict[str, torch.Tensor]:
        """The gradients the current saliency window has summed so far (what a resume must get back)."""
        return self._resumed_grads or {n: p.grad for n, p in self._grad_params.items()
                                       if p.grad is not None and self.grad_steps}

    # ---------------------------------------------------------------- pieces

    def redundant(self) -> list[int]:
        return [i for p in self.periods for i in p]

    def _groups(self, indices) -> dict:
        return {i: self.graph.groups[i] for i in indices}

    def _in_window(self, step: int) -> bool:
        """Whether the 0-based step `step` is one of the `saliency_steps` steps that end at a choice."""
        return step in self._window_steps

    def _window_gradients(self, run: TrainRun) -> dict[str, torch.Tensor] | None:
        """The window's mean gradients, averaged over the processes (in place: a second choice at the same step
        reads the same), or None without saliency_steps."""
        if self.config.saliency_steps is None:
            return None
        if not self.grad_steps:  # every step of the window overflowed (fp16) and was skipped
            raise LorashearError(f"no --saliency-steps step before period {len(self.periods) + 1} had finite "
                                 "gradients (fp16 overflow); use more --saliency-steps or bf16/fp32 precision")
        if not self._grads_used:
            world = run.accelerator.num_processes
            for p in self._grad_params.values():
                if p.grad is not None:
                    if world > 1 and not is_dtensor(p.grad):  # FSDP's reduce-scatter averaged sharded ones
                        p.grad.copy_(run.accelerator.reduce(p.grad, reduction="mean"))
                    p.grad.div_(self.grad_steps)
            self._grads_used = True
        return {n: p.grad for n, p in self._grad_params.items() if p.grad is not None}

    def _free_gradients(self) -> None:
        for p in self._grad_params.values():
            p.grad = None
        self.grad_steps, self._grads_used = 0, False

    def _start_period(self, run: TrainRun, period: int) -> None:
        """Move the least salient still-important groups into the redundant set (cumulative ratio·(p+1)/P)."""
        ctx = ScoreContext(run.unwrapped, self.graph, self.batches, aliases=self.aliases, kinds=self.kinds,
                           memo=self._score_memo, gradients=self._window_gradients(run))
        ranking = per_parameter_scores(self.graph, self.criterion.score(ctx), self.aliases)
        target = self.ratio * (period + 1) / self.config.periods
        chosen = self._select(ranking, target)
        self.periods.append(chosen)
        self.variables.add(self._groups(chosen))

    def _select(self, ranking: dict[int, float], ratio: float) -> list[int]:
        """Groups the plan's `select` adds to the redundant ones (forced in first) to reach `ratio`, in index order."""
        return select_more(self.graph, ranking, set(self.redundant()), ratio, self.uniform, list(self.kinds), "lhspg",
                           aliases=self.aliases, multiple_of=self.multiple_of)

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


def _loss_scale(run: TrainRun) -> float:
    """fp16's current loss scale (gradients arrive multiplied by it); 1 without a scaler."""
    scaler = getattr(run.accelerator, "scaler", None)
    return float(scaler.get_scale()) if scaler is not None else 1.0
