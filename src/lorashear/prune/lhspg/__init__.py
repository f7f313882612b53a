"""LoRAShear's progressive structured pruning (LHSPG, the paper's Algorithm 4) as a training-loop hook.

    hook = LhspgHook(LhspgConfig(), graph, ratio=0.2, kinds=("kv_group", "mlp_channel"), aliases=aliases,
                     batches=calibration_batches)  # the default saliency (taylor) needs calibration data
    # the shared loop calls hook.on_start / after_step / on_end; at the end the plan's groups are zero

`config` the settings, `schedule` warm-up and periods (each group's x_g: `prune.variables`),
`step` the projection / fade / merge math, `hook` the selection and bookkeeping.
"""

from lorashear.prune.lhspg.config import LAMBDA_RULES, MERGES, VARIANTS, LhspgConfig
from lorashear.prune.lhspg.hook import LhspgHook
from lorashear.prune.lhspg.schedule import Schedule
from lorashear.prune.lhspg.step import fade, merge_lora, project, step_size
from lorashear.prune.variables import GroupVariables

__all__ = ["LAMBDA_RULES", "MERGES", "VARIANTS", "GroupVariables", "LhspgConfig", "LhspgHook", "Schedule", "fade",
           "merge_lora", "project", "step_size"]
