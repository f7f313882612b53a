"""`LhspgConfig`: LoRAShear's progressive pruning settings (defaults follow the paper and the authors' code)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from lorashear.errors import LorashearError

VARIANTS = ("projection", "fade")  # Algorithm 4's half-space projection; the released code's multiplicative fade
LAMBDA_RULES = ("remaining", "constant")  # λ = ‖x_g‖/(steps left in the period), or ‖x_g at its first step‖/T
MERGES = ("reset", "keep")  # period end: merge s·BA into W and restart LoRA from B = 0; or keep LoRA unmerged


@dataclass
class LhspgConfig:
    """Schedule (warm-up share of the steps, P periods), projection (ε, λ rule, variant), saliency, merging."""

    warmup_share: float = 0.1
    periods: int = 5
    epsilon: float = 0.0  # half-space test x̃ᵀx < ε‖x‖² (DHSPG's default 0)
    lambda_rule: str = "remaining"
    variant: str = "projection"
    saliency: str = "taylor"  # any registered criterion (README: taylor beat the lhspg proxy mix)
    saliency_options: dict = field(default_factory=dict)
    # A data-driven saliency (taylor, wanda-sp, ...) scores on the first N calibration samples at each period
    # start (None: all of them). Its cost is per period start, not per step: fewer samples, less time.
    saliency_samples: int | None = None
    # A gradient saliency (taylor) reads ∂L/∂W of the N training steps that end at each period start instead
    # of calibration batches (None: calibration). Only those steps compute the frozen weights' gradients.
    saliency_steps: int | None = None
    merge: str = "reset"
    group_divisible: int = 1  # kept MLP/hidden channel counts a multiple of this (select's multiple_of)

    def __post_init__(self) -> None:
        from lorashear.importance import get_criterion

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
        _positive_int("--group-divisible", self.group_divisible)
        criterion = get_criterion(self.saliency, **self.saliency_options)  # unknown saliency or option: fail now
        if self.saliency_steps is not None:
            _positive_int("--saliency-steps", self.saliency_steps)
            if not criterion.reads_gradients:
                raise LorashearError(f"--saliency-steps needs a saliency that reads weight gradients (taylor); "
                                     f"'{self.saliency}' does not: drop --saliency-steps or use --saliency taylor")
            if self.saliency_samples is not None:
                raise LorashearError("--saliency-samples (calibration samples) and --saliency-steps (training steps) "
                                     "are two sources for the same scores: give one")

    def to_dict(self) -> dict:
        return asdict(self)


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LorashearError(f"{name} must be a positive integer, got {value!r}")
