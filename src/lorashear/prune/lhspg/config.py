"""`LhspgConfig`: LoRAShear's progressive pruning settings (defaults follow the paper and the authors' code) and
its training run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lorashear.errors import LorashearError
from lorashear.importance import get_criterion
from lorashear.prune.options import TrainedConfig, score_options_field

VARIANTS = ("projection", "fade")  # Algorithm 4's half-space projection; the released code's multiplicative fade
LAMBDA_RULES = ("remaining", "constant")  # λ = ‖x_g‖/(steps left in the period), or ‖x_g at its first step‖/T
MERGES = ("reset", "keep")  # period end: merge s·BA into W and restart LoRA from B = 0; or keep LoRA unmerged


@dataclass
class LhspgConfig(TrainedConfig):
    """Schedule (warm-up share of the steps, P periods), projection (ε, λ rule, variant), saliency, merging;
    and the training run it prunes in (`TrainedConfig`)."""

    warmup_share: float = field(default=0.1, metadata={"help": "share of the optimiser steps before pruning starts"})
    periods: int = field(default=5, metadata={"help": "pruning periods; each zeroes ratio/periods more"})
    epsilon: float = field(default=0.0, metadata={  # DHSPG's default 0
        "help": "half-space test: zero a group when x̃ᵀx < ε‖x‖²"})
    lambda_rule: str = field(default="remaining", metadata={
        "help": "step towards zero: ‖x‖/(steps left), or constant", "choices": LAMBDA_RULES})
    variant: str = field(default="projection", metadata={
        "help": "Algorithm 4's projection, or the released code's fade", "choices": VARIANTS})
    saliency: str = field(default="taylor", metadata={  # README: taylor beat the lhspg proxy mix
        "help": "criterion that picks each period's groups (any registered criterion); its options via --score-option"})
    saliency_options: dict = score_options_field("the saliency criterion's options")
    # A data-driven saliency (taylor, wanda-sp, ...) scores on the first N calibration samples at each period
    # start (None: all of them). Its cost is per period start, not per step: fewer samples, less time.
    saliency_samples: int | None = field(default=None, metadata={"metavar": "N", "help": (
        "a data-driven saliency scores the first N calibration samples at each period start (default: all "
        "--calib-samples); its cost per start scales with N")})
    # A gradient saliency (taylor) reads ∂L/∂W of the N training steps that end at each period start instead
    # of calibration batches (None: calibration). Only those steps compute the frozen weights' gradients.
    saliency_steps: int | None = field(default=None, metadata={"metavar": "N", "help": (
        "a gradient saliency (taylor) reads the weight gradients of the N training steps that end at each "
        "period start instead of calibration passes (default: calibration)")})
    merge: str = field(default="reset", metadata={
        "help": "period end: merge BA and restart LoRA (reset), or keep it", "choices": MERGES})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.warmup_share < 1.0:
            raise LorashearError(f"LHSPG warm-up share must be in [0, 1), got {self.warmup_share}")
        _positive_int("LHSPG periods", self.periods)
        if not (math.isfinite(self.epsilon) and 0.0 <= self.epsilon < 1.0):
            raise LorashearError(f"LHSPG epsilon must be in [0, 1), got {self.epsilon}")
        for name, value, choices in (("lambda rule", self.lambda_rule, LAMBDA_RULES),
                                     ("variant", self.variant, VARIANTS), ("merge", self.merge, MERGES)):
            if value not in choices:
                raise LorashearError(f"LHSPG {name} must be one of {', '.join(choices)}, got {value!r}")
        if self.saliency_samples is not None:
            _positive_int("--saliency-samples", self.saliency_samples)
        criterion = get_criterion(self.saliency, **self.saliency_options)  # unknown saliency or option: fail now
        if self.saliency_steps is not None:
            _positive_int("--saliency-steps", self.saliency_steps)
            if not criterion.reads_gradients:
                raise LorashearError(f"--saliency-steps needs a saliency that reads weight gradients (taylor); "
                                     f"'{self.saliency}' does not: drop --saliency-steps or use --saliency taylor")
            if self.saliency_samples is not None:
                raise LorashearError("--saliency-samples (calibration samples) and --saliency-steps (training steps) "
                                     "are two sources for the same scores: give one")


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LorashearError(f"{name} must be a positive integer, got {value!r}")
