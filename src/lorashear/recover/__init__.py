"""Dynamic knowledge recovery (LoRAShear stage 4): staged LoRA fine-tuning of a pruned model on Accelerate.

`recover(RecoverConfig(...))` runs the recipe; its components (mixture, streams, losses,
checkpointing, logs) are small modules usable and tested on their own.
"""

from lorashear.recover.config import RecoverConfig
from lorashear.recover.losses import kd_loss, lm_loss, recovery_loss
from lorashear.recover.mixture import DynamicMixture
from lorashear.recover.recipe import RecoveryResult, recover
from lorashear.recover.streams import Category, MixedStream, pack_instructions

__all__ = [
    "Category",
    "DynamicMixture",
    "MixedStream",
    "RecoverConfig",
    "RecoveryResult",
    "kd_loss",
    "lm_loss",
    "pack_instructions",
    "recover",
    "recovery_loss",
]
