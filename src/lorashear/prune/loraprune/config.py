"""`LorapruneConfig`: LoRAPrune's iterative pruning settings (defaults follow the paper and the released code)
and its training run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lorashear.errors import LorashearError
from lorashear.importance import get_criterion
from lorashear.importance.base import Criterion
from lorashear.prune.options import TrainedConfig, score_options_field

CRITERION = "lora-grad"


@dataclass
class LorapruneConfig(TrainedConfig):
    """Score moving average β, cubic schedule (warm-up / cool-down shares), mask period, criterion options;
    and the training run it prunes in (`TrainedConfig`)."""

    beta: float = field(default=0.9, metadata={  # s ← β·s + (1 − β)·s_new every optimiser step
        "help": "moving average of the scores: s ← β·s + (1 − β)·s_new"})
    warmup_share: float = field(default=0.1, metadata={  # no masks during the first share of the steps
        "help": "share of the optimiser steps before pruning starts"})
    cooldown_share: float = field(default=0.1, metadata={"help": "share of the last steps held at the target ratio"})
    mask_every: int = field(default=10, metadata={"help": "optimiser steps between mask updates", "metavar": "N"})
    subtract_cross: bool = field(default=False, metadata={
        "help": "the released code's G − ∇B·∇A instead of the paper's G = ∇B·A + B·∇A"})
    criterion_options: dict = score_options_field("more lora-grad options (normalize, reduce)")

    def __post_init__(self) -> None:
        super().__post_init__()
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
        if isinstance(self.mask_every, bool) or not isinstance(self.mask_every, int) or self.mask_every < 1:
            raise LorashearError(f"LoRAPrune mask period (--mask-every) must be a positive integer, got {self.mask_every!r}")
        if "gradients" in self.criterion_options:
            raise LorashearError("LoRAPrune reads the training loop's LoRA gradients; drop the 'gradients' option")
        self.criterion()  # an unknown option fails now

    def criterion(self) -> Criterion:
        """The lora-grad criterion reading the gradients the training loop left on the LoRA factors."""
        return get_criterion(CRITERION, gradients="present", subtract_cross=self.subtract_cross,
                             **self.criterion_options)

