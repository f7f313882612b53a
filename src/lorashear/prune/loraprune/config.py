"""`LorapruneConfig`: LoRAPrune's iterative pruning settings (defaults follow the paper and the released code)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from lorashear.errors import LorashearError
from lorashear.importance.base import Criterion

CRITERION = "lora-grad"


@dataclass
class LorapruneConfig:
    """Score moving average β, cubic schedule (warm-up / cool-down shares), mask period, criterion options."""

    beta: float = 0.9  # s ← β·s + (1 − β)·s_new every optimiser step
    warmup_share: float = 0.1  # no masks during the first share of the steps
    cooldown_share: float = 0.1  # the target ratio during the last share
    mask_every: int = 10  # optimiser steps between mask updates
    subtract_cross: bool = False  # the released code's G − ∇B·∇A
    criterion_options: dict = field(default_factory=dict)  # more lora-grad options (normalize, reduce)
    group_divisible: int = 1  # kept MLP/hidden channel counts a multiple of this (select's multiple_of)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.beta) and 0.0 <= self.beta < 1.0):
            raise LorashearError(f"LoRAPrune beta (score moving average) must be in [0, 1), got {self.beta}")
        for name, share in (("warm-up", self.warmup_share), ("cool-down", self.cooldown_share)):
            if not 0.0 <= share < 1.0:
                raise LorashearError(f"LoRAPrune {name} share must be in [0, 1), got {share}")
        if self.warmup_share + self.cooldown_share >= 1.0:
            raise LorashearError(
                f"LoRAPrune warm-up ({self.warmup_share}) and cool-down ({self.cooldown_share}) shares leave no "
                "steps for the cubic schedule; their sum must be below 1"
            )
        for name, value in (("mask period (--mask-every)", self.mask_every), ("--group-divisible", self.group_divisible)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LorashearError(f"LoRAPrune {name} must be a positive integer, got {value!r}")
        if "gradients" in self.criterion_options:
            raise LorashearError("LoRAPrune reads the training loop's LoRA gradients; drop the 'gradients' option")
        self.criterion()  # an unknown option fails now

    def criterion(self) -> Criterion:
        """The lora-grad criterion reading the gradients the training loop left on the LoRA factors."""
        from lorashear.importance import get_criterion

        return get_criterion(CRITERION, gradients="present", subtract_cross=self.subtract_cross,
                             **self.criterion_options)

    def to_dict(self) -> dict:
        return asdict(self)
