"""LoRAPrune (Zhang et al., 2024) as a training-loop hook: LoRA-gradient importance, iterative masks.

    hook = LorapruneHook(LorapruneConfig(), graph, ratio=0.2, kinds=("kv_group", "mlp_channel"), aliases=aliases)
    # the shared loop calls hook.on_start / before_optimizer_step / after_step / on_end; then hook.plan()

`config` the settings, `schedule` the cubic ratio, `hook` scoring, moving averages and masks. The
criterion is the importance registry's `lora-grad`; group slices come from LHSPG's `GroupVariables`.
"""

from lorashear.prune.loraprune.config import LorapruneConfig
from lorashear.prune.loraprune.hook import LorapruneHook
from lorashear.prune.loraprune.schedule import cubic_ratio

__all__ = ["LorapruneConfig", "LorapruneHook", "cubic_ratio"]
