"""The one training loop: optimiser steps of accumulated micro-batches, hooks, step log, progress, checkpoints.

    run = TrainRun(model, optimizer, scheduler, accelerator, config, total_steps, work)   # all prepared
    train(run, batch_source, loss_fn, hooks)      # returns run; run.finished is False after stop_after_steps

Per optimiser step: `before_step` hooks; `grad_accum` micro-batches (each the next *global* batch
from `batch_source`, of which this process keeps its strided rows, so k processes see the data one
process would with a k times larger batch); on the last one gradients are clipped to norm 1, then
`before_optimizer_step` hooks see the whole step's synchronised gradients; optimizer and scheduler step;
`after_step` hooks may edit the model and add keys to the step's log line. Checkpoints
(`work/checkpoints/step-N`, Accelerate's full state plus the run's and every hook's state_dict)
every `checkpoint_every` steps and at `stop_after_steps`; `config.resume` continues from the last one. A sharded
model (FSDP, `sharding`) and its optimizer are checkpointed by torch.distributed.checkpoint beside Accelerate's state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from lorashear.train import checkpoint as ckpt
from lorashear.train import sharding
from lorashear.train.config import LoopConfig
from lorashear.train.hooks import TrainHook
from lorashear.train.logs import StepLog

MAX_GRAD_NORM = 1.0


@dataclass(eq=False)
class TrainRun:
    """A run in progress: the prepared model/optimizer/scheduler, where it writes, and how far it got."""

    model: Any  # prepared (peft PeftModel, possibly wrapped by DDP/FSDP)
    optimizer: Any
    scheduler: Any
    accelerator: Accelerator
    config: LoopConfig
    total_steps: int
    work: Path  # the run folder (checkpoints/, logs/)
    step: int = 0  # optimiser steps done
    tokens_seen: int = 0  # global, all processes
    finished: bool = False
    # True when nothing but the trainable parameters (LoRA) ever changes (recovery): checkpoints then hold those
    # only, not a copy of the frozen base per checkpoint. Pruning methods edit the base weights: they keep all.
    frozen_base: bool = False

    @property
    def sharded(self) -> bool:
        """FSDP (`sharding`): the model and optimizer are checkpointed shard by shard, not by Accelerate."""
        return sharding.is_sharded(self.model)

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def state_dict(self) -> dict:
        return {"step": self.step, "tokens_seen": self.tokens_seen}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.tokens_seen = int(state["tokens_seen"])


# The next global micro-batch (input_ids, labels) of `rows` rows; the loop keeps this process's share.
BatchSource = Callable[[TrainRun, int], tuple[torch.Tensor, torch.Tensor]]
# (model, input_ids, labels) -> (loss to back-propagate, float parts for the log, e.g. {"lm_loss": ...}).
LossFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


def shard_rows(batch: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This process's rows of a global batch (strided, so every process gets the same count)."""
    return batch[rank::world]


def train(
    run: TrainRun,
    batch_source: BatchSource,
    loss_fn: LossFn,
    hooks: Sequence[TrainHook] = (),
    *,
    desc: str = "train",
    postfix: Callable[[dict], dict] | None = None,
) -> TrainRun:
    """Train until `run.total_steps` (or `stop_after_steps`); `postfix(record)` adds items to the progress bar."""
    accelerator, config = run.accelerator, run.config
    accelerator.register_for_checkpointing(run, *hooks, *([run.scheduler] if run.sharded else []))
    if run.frozen_base:
        accelerator.register_save_state_pre_hook(_trainable_only)
    resume_from = ckpt.latest_checkpoint(run.work) if config.resume else None
    if resume_from is not None:
        # a frozen base comes from the model folder, as it did in the interrupted run: only LoRA is in the checkpoint
        accelerator.load_state(str(resume_from), **({"strict": False} if run.frozen_base else {}))
        if run.sharded:
            extra = {f"hook{i}": hook.sharded_state_dict(run) for i, hook in enumerate(hooks)}
            sharding.load_state(run.model, run.optimizer, resume_from, run.frozen_base, extra)
            for i, hook in enumerate(hooks):
                hook.load_sharded_state_dict(extra[f"hook{i}"])
        accelerator.print(f"resumed from {resume_from} (step {run.step}, {run.tokens_seen:,} tokens)")
    main = accelerator.is_main_process
    step_log = StepLog(run.work / "logs" / "steps.jsonl", run.step if resume_from else None) if main else None
    for hook in hooks:
        hook.on_start(run)

    progress = tqdm(total=run.total_steps, initial=run.step, desc=desc, disable=not main)
    while run.step < run.total_steps:
        for hook in hooks:
            hook.before_step(run)
        started = time.perf_counter()
        record = _optimizer_step(run, batch_source, loss_fn, hooks)
        tokens = record.pop("tokens")
        run.step += 1
        run.tokens_seen += tokens
        record.update(step=run.step, lr=run.scheduler.get_last_lr()[0], tokens_seen=run.tokens_seen)
        for hook in hooks:
            hook.after_step(run, record)
        record["tokens_per_s"] = tokens / (time.perf_counter() - started)
        if step_log is not None:
            step_log.write(record)
        progress.update(1)
        extra = postfix(record) if postfix is not None else {}
        progress.set_postfix({**extra, "loss": f"{record['loss']:.3f}", "tok_s": f"{record['tokens_per_s']:.0f}"})
        # -------------------------------------------------------------- checkpoint
        stop = config.stop_after_steps is not None and run.step >= config.stop_after_steps
        periodic = config.checkpoint_every and run.step % config.checkpoint_every == 0 and run.step < run.total_steps
        if stop or periodic:
            save_checkpoint(run, hooks)
        if stop and run.step < run.total_steps:
            progress.close()
            accelerator.print(f"stopped after step {run.step}; continue with --resume")
            return run
    progress.close()
    for hook in hooks:
        hook.on_end(run)
    run.finished = True
    return run


def _optimizer_step(run: TrainRun, batch_source: BatchSource, loss_fn: LossFn, hooks: Sequence[TrainHook]) -> dict:
    """One optimiser step of `grad_accum` micro-batches; returns the step's mean losses and global token count."""
    accelerator, model, config = run.accelerator, run.model, run.config
    rank, world = accelerator.process_index, accelerator.num_processes
    sums: dict[str, float] = {}
    tokens = torch.zeros((), dtype=torch.long, device=accelerator.device)
    for _ in range(config.grad_accum):
        ids, labels = batch_source(run, config.batch_size * world)
        ids = shard_rows(ids, rank, world).to(accelerator.device)
        labels = shard_rows(labels, rank, world).to(accelerator.device)
        tokens += ids.numel()
        with accelerator.accumulate(model):
            loss, parts = loss_fn(model, ids, labels)
            accelerator.backward(loss)
            if accelerator.sync_gradients:  # the step's last micro-batch: its gradients are complete
                # Clipping first unscales fp16 gradients, so hooks see the true (clipped) ones. Only what the
                # optimizer trains counts (a hook may take gradients of frozen weights for its own scores).
                trained = [p for group in run.optimizer.param_groups for p in group["params"]]
                accelerator.clip_grad_norm_(trained, MAX_GRAD_NORM)
                for hook in hooks:
                    hook.before_optimizer_step(run)
                run.optimizer.step()
                run.scheduler.step()
                run.optimizer.zero_grad()
        for key, value in {"loss": float(loss.detach()), **parts}.items():
            sums[key] = sums.get(key, 0.0) + value / config.grad_accum
    keys = sorted(sums)
    means = accelerator.reduce(torch.tensor([sums[k] for k in keys], device=accelerator.device), reduction="mean")
    record = dict(zip(keys, means.tolist(), strict=True))
    record["tokens"] = int(accelerator.reduce(tokens, reduction="sum"))
    return record


def _trainable_only(models: list, weights: list[dict], output_dir: str) -> None:
    """Accelerate's save-state hook: each model's state dict cut to its trainable parameters, in place."""
    for model, state in zip(models, weights, strict=False):  # FSDP/DeepSpeed save their models themselves
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        for name in [name for name in state if name not in trainable]:
            del state[name]


def save_checkpoint(run: TrainRun, hooks: Sequence[TrainHook] = ()) -> Path:
    """Accelerate's full state (model, optimizer, scheduler, RNG, the run, its hooks), then the completion marker."""
    accelerator = run.accelerator
    path = ckpt.checkpoint_dir(run.work, run.step)
    accelerator.save_state(str(path))
    if run.sharded:
        extra = {f"hook{i}": hook.sharded_state_dict(run) for i, hook in enumerate(hooks)}
        sharding.save_state(run.model, run.optimizer, path, run.frozen_base, extra)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        ckpt.mark_complete(path, run.step, run.tokens_seen)
        ckpt.prune_checkpoints(run.work, run.config.keep_checkpoints)
    accelerator.wait_for_everyone()
    return path
