"""Dynamic knowledge recovery (LoRAShear stage 4): staged LoRA fine-tuning of a pruned model on Accelerate.

`recover(RecoverConfig(...))` runs the recipe (recipe.py) on the shared training loop
(`lorashear.train`); its own components (stages, mixture, streams, losses, logs) are small modules
usable and tested on their own.

    lorashear recover PRUNED --dense MODEL --tokens N -o OUT [--config configs/methods/recover.yaml]
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 \
        -m lorashear recover PRUNED --dense MODEL --tokens N -o OUT        # 2 CPU processes (gloo)
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m lorashear recover ...

OUT holds the merged model and tokenizer, recover_config.yaml, recovery.json,
logs/steps.jsonl, logs/mixture.json and plots/; until the run ends it is `.OUT.partial`.
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
