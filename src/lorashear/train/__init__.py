"""The one training loop of every trained stage (recovery, LHSPG, LoRAPrune): torchtune's component side.

A stage is a recipe that sets up data and a loss, then calls the loop; its own work is a TrainHook:

    accelerator = make_accelerator(config)                 # config: a LoopConfig (sub)class
    work = checkpoint.check_run_dir(out, config.resume)    # .OUT.partial; fails before anything is written
    if accelerator.is_main_process:
        checkpoint.start_run_dir(work, config.resume)
    run = lora_run(load_pruned_base(spec, accelerator.device), config, accelerator, work, total_steps)
    train(run, batch_source, loss_fn, hooks=[MyHook()], desc="lhspg")
    if run.finished:                                       # else stopped at stop_after_steps: --resume later
        save_merged(accelerator, run.model, tokenizer, spec, config, work)
        if accelerator.is_main_process:
            checkpoint.finish(work, out)                   # drop checkpoints, rename to OUT

`batch_source(run, rows)` gives the next global micro-batch (input_ids, labels); the loop keeps this
process's rows. `loss_fn(model, ids, labels)` gives (loss, {part: float}) for the step log
(work/logs/steps.jsonl). Hooks (hooks.py) run on every process at fixed points of each step; their
state_dict is checkpointed with the run, so `--resume` restores them. Modules: config (LoopConfig),
accelerator, loop (TrainRun, train), lora (LoRA set-up: lora_run, save_merged), checkpoint (run
folder and checkpoint format), logs (step log, loss plot).
"""

from lorashear.train.accelerator import make_accelerator
from lorashear.train.config import LoopConfig
from lorashear.train.hooks import TrainHook
from lorashear.train.loop import BatchSource, LossFn, TrainRun, train
from lorashear.train.lora import (
    add_lora,
    load_pruned_base,
    lora_model,
    lora_run,
    make_optimizer,
    save_merged,
)

__all__ = [
    "BatchSource",
    "LoopConfig",
    "LossFn",
    "TrainHook",
    "TrainRun",
    "add_lora",
    "load_pruned_base",
    "lora_model",
    "lora_run",
    "make_accelerator",
    "make_optimizer",
    "save_merged",
    "train",
]
