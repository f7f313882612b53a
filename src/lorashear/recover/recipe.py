"""The recovery recipe (LoRAShear stage 4), top to bottom: setup, loop, checkpoint, save.

LoRA fine-tuning of a pruned model on Hugging Face Accelerate, in two stages: pretraining-like
text, then instructions. In each stage the categories' sampling weights follow their held-out
loss relative to the dense model (`mixture.py`); distillation from the dense model is optional.
One process or `accelerate launch` (DDP, FSDP) alike; see configs/accelerate/.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from lorashear.errors import LorashearError
from lorashear.models import count_parameters, load_model, load_tokenizer, resolve_model
from lorashear.recover import checkpoint as ckpt
from lorashear.recover.config import RecoverConfig
from lorashear.recover.logs import StepLog, plot_run, read_jsonl
from lorashear.recover.losses import lm_loss_sum, recovery_loss
from lorashear.recover.mixture import DynamicMixture
from lorashear.recover.streams import (
    Category,
    MixedStream,
    instruction_categories,
    shard_rows,
    text_categories,
)

PRETRAIN, INSTRUCT = "pretrain", "instruct"


@dataclass
class Stage:
    """One stage: its categories' stream, their mixture, the dense reference losses, its steps [start, end)."""

    name: str
    stream: MixedStream
    mixture: DynamicMixture
    reference: dict[str, float]
    start: int
    end: int


@dataclass
class RunState:
    """Everything beyond model/optimizer/scheduler/RNG that a resumed run needs (checkpointed by Accelerate)."""

    stages: list[Stage]
    step: int = 0
    tokens_seen: int = 0

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "streams": {s.name: s.stream.state_dict() for s in self.stages},
            "mixtures": {s.name: s.mixture.state_dict() for s in self.stages},
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.tokens_seen = int(state["tokens_seen"])
        for s in self.stages:
            s.stream.load_state_dict(state["streams"][s.name])
            s.mixture.load_state_dict(state["mixtures"][s.name])


@dataclass
class RecoveryResult:
    """What a run produced; `finished` is False when it stopped early (`stop_after_steps`) for a later --resume."""

    out: Path
    finished: bool
    steps: int
    tokens_seen: int
    final_losses: dict[str, dict[str, float]] = field(default_factory=dict)
    reference_losses: dict[str, dict[str, float]] = field(default_factory=dict)


def recover(config: RecoverConfig) -> RecoveryResult:
    """Run knowledge recovery as configured; returns where the merged model and logs are."""
    config.validate()
    # ------------------------------------------------------------------ setup
    accelerator = make_accelerator(config)
    # Everything that can be wrong with the input fails here, before the run folder exists.
    work = ckpt.check_run_dir(config.out, config.resume)
    if config.resume:
        _check_same_run(work, config)
    for spec in (config.pruned, config.dense):
        if spec is not None:
            resolve_model(spec)
    set_seed(config.seed)
    tokenizer = _tokenizer(config)
    tokens_per_step = config.batch_size * config.seq_len * config.grad_accum * accelerator.num_processes
    stage1_tokens = round(config.tokens * config.stage_split)
    steps1 = math.ceil(stage1_tokens / tokens_per_step)
    steps2 = math.ceil((config.tokens - stage1_tokens) / tokens_per_step)
    total_steps = steps1 + steps2

    stages: list[Stage] = []
    if steps1:
        cats = text_categories(config.data, tokenizer, config.seq_len, config.held_out, config.seed)
        stages.append(_stage(PRETRAIN, cats, 0, steps1, config))
    if steps2:
        cats = instruction_categories(config.instruct, tokenizer, config.seq_len, config.held_out, config.seed)
        stages.append(_stage(INSTRUCT, cats, steps1, total_steps, config))

    accelerator.wait_for_everyone()  # every process has checked before anyone writes
    if accelerator.is_main_process:
        ckpt.start_run_dir(work, config.resume)
        config.save(work / "recover_config.yaml")
    accelerator.wait_for_everyone()

    dense = None
    if config.dense is not None and (config.kd_weight > 0 or not (work / "reference_losses.json").is_file()):
        dense = load_model(config.dense, device=accelerator.device)
    _reference_losses(stages, dense, work, config, accelerator)
    teacher = dense if config.kd_weight > 0 else None
    if teacher is None:
        del dense  # the reference losses are cached; free the memory

    model = _lora_model(load_pruned_base(config.pruned, accelerator.device), config)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
    )
    from transformers import get_cosine_schedule_with_warmup

    scheduler = get_cosine_schedule_with_warmup(optimizer, round(config.warmup_ratio * total_steps), total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    state = RunState(stages)
    accelerator.register_for_checkpointing(state)
    resume_from = ckpt.latest_checkpoint(work) if config.resume else None
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        accelerator.print(f"resumed from {resume_from} (step {state.step}, {state.tokens_seen:,} tokens)")
    step_log = StepLog(work / "logs" / "steps.jsonl", state.step if resume_from else None) if accelerator.is_main_process else None

    # ------------------------------------------------------------------ loop
    progress = tqdm(total=total_steps, initial=state.step, desc="recover", disable=not accelerator.is_main_process)
    for stage in stages:
        while stage.start <= state.step < stage.end:
            if (state.step - stage.start) % config.mix_interval == 0:
                losses = category_losses(model, stage.stream.categories, config, accelerator)
                stage.mixture.update(losses, stage.reference or losses, step=state.step)
                if accelerator.is_main_process:
                    _write_mixture_log(stages, work)
            started = time.perf_counter()
            record = train_step(model, teacher, optimizer, scheduler, stage, config, accelerator)
            state.step += 1
            state.tokens_seen += record.pop("tokens")
            record.update(
                step=state.step, stage=stage.name, lr=scheduler.get_last_lr()[0], tokens_seen=state.tokens_seen,
                tokens_per_s=tokens_per_step / (time.perf_counter() - started),
            )
            if step_log is not None:
                step_log.write(record)
            progress.update(1)
            progress.set_postfix(stage=stage.name, loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
            # ---------------------------------------------------------- checkpoint
            stop = config.stop_after_steps is not None and state.step >= config.stop_after_steps
            if stop or (config.checkpoint_every and state.step % config.checkpoint_every == 0 and state.step < total_steps):
                save_checkpoint(accelerator, work, state, config.keep_checkpoints)
            if stop and state.step < total_steps:
                progress.close()
                accelerator.print(f"stopped after step {state.step}; continue with --resume")
                return RecoveryResult(Path(config.out), False, state.step, state.tokens_seen)
    progress.close()

    # ------------------------------------------------------------------ save
    final = {s.name: category_losses(model, s.stream.categories, config, accelerator) for s in stages}
    parameters = save_merged(accelerator, model, tokenizer, config, work)
    out = Path(config.out).expanduser().absolute()
    if accelerator.is_main_process:
        _write_mixture_log(stages, work)
        summary = {
            "steps": state.step,
            "tokens_seen": state.tokens_seen,
            "num_processes": accelerator.num_processes,
            "tokens_per_step": tokens_per_step,
            "mixed_precision": accelerator.mixed_precision,
            "parameters": parameters,
            "final_losses": final,
            "reference_losses": {s.name: s.reference for s in stages},
        }
        (work / "recovery.json").write_text(json.dumps(summary, indent=2))
        plot_run(read_jsonl(work / "logs" / "steps.jsonl"), {s.name: s.mixture.history for s in stages}, work / "plots")
        ckpt.finish(work, out)
    accelerator.wait_for_everyone()
    return RecoveryResult(out, True, state.step, state.tokens_seen, final, {s.name: s.reference for s in stages})


# ---------------------------------------------------------------------- pieces of the recipe


def make_accelerator(config: RecoverConfig) -> Accelerator:
    """An Accelerator with gradient accumulation and bf16 autocast on GPUs that support it."""
    precision = config.mixed_precision
    if precision == "auto":
        if os.environ.get("ACCELERATE_MIXED_PRECISION"):
            precision = None  # `accelerate launch --mixed_precision` / its config file decides
        elif torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            precision = "bf16"
        else:
            precision = "no"
    # The scheduler counts optimiser steps of the *global* batch, so it must step once per
    # optimiser step, not once per process (Accelerate's default).
    accelerator = Accelerator(
        gradient_accumulation_steps=config.grad_accum, mixed_precision=precision, step_scheduler_with_optimizer=False
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        # e.g. `accelerate launch --multi_gpu` on a machine without GPUs: every process would train alone.
        raise LorashearError(
            f"{launched} processes were launched but Accelerate runs {accelerator.num_processes} as one job; "
            "on CPUs set ACCELERATE_USE_CPU=1 (see configs/accelerate/cpu_2proc.yaml)"
        )
    return accelerator


# Options that may change between a run and its resumption; any other change would train a different run.
_RESUMABLE_CHANGES = {"resume", "stop_after_steps", "checkpoint_every", "keep_checkpoints"}


def _check_same_run(work: Path, config: RecoverConfig) -> None:
    saved = RecoverConfig.from_yaml(work / "recover_config.yaml").to_dict()
    changed = sorted(k for k, v in config.to_dict().items() if k not in _RESUMABLE_CHANGES and saved.get(k) != v)
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {getattr(config, k)!r}" for k in changed)
        raise LorashearError(f"--resume with different options than the interrupted run ({diffs}); use the same ones")


def _tokenizer(config: RecoverConfig):
    """The pruned folder's tokenizer, else the dense model's (pruning never changes the vocabulary)."""
    try:
        return load_tokenizer(config.pruned)
    except LorashearError:
        if config.dense is None:
            raise
        return load_tokenizer(config.dense)


def _stage(name: str, categories: list[Category], start: int, end: int, config: RecoverConfig) -> Stage:
    names = [c.name for c in categories]
    mixture = DynamicMixture(names, eta=config.mix_eta, smoothing=config.mix_smoothing, dynamic=config.mix == "dynamic")
    return Stage(name, MixedStream(categories, seed=config.seed + start), mixture, {}, start, end)


def load_pruned_base(spec: str, device) -> torch.nn.Module:
    """The pruned model without adapters: a LoRA adapter kept by `lorashear prune --lora` is merged first."""
    model = load_model(spec, device=device)
    if hasattr(model, "peft_config"):
        model = model.merge_and_unload()
    return model


def _lora_model(model: torch.nn.Module, config: RecoverConfig):
    """The pruned model with trainable LoRA adapters (peft) on its linear layers."""
    from peft import LoraConfig, get_peft_model

    model.config.use_cache = False  # no KV cache while training
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_targets,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    peft_model.train()
    return peft_model


@torch.no_grad()
def category_losses(model, categories: list[Category], config: RecoverConfig, accelerator: Accelerator) -> dict[str, float]:
    """Mean next-token loss of each category's held-out blocks; the blocks are split across processes."""
    was_training = model.training
    model.eval()
    device = accelerator.device
    losses = {}
    for cat in categories:
        ids = shard_rows(cat.held_input_ids[: config.eval_sequences], accelerator.process_index, accelerator.num_processes)
        labels = shard_rows(cat.held_labels[: config.eval_sequences], accelerator.process_index, accelerator.num_processes)
        total = torch.zeros(2, dtype=torch.float64, device=device)
        for i in range(0, len(ids), config.batch_size):
            with accelerator.autocast():
                logits = model(input_ids=ids[i : i + config.batch_size].to(device)).logits
            loss_sum, count = lm_loss_sum(logits, labels[i : i + config.batch_size].to(device))
            total += torch.stack([loss_sum.double(), count.double()])
        total = accelerator.reduce(total, reduction="sum")
        losses[cat.name] = float(total[0] / total[1].clamp(min=1))
    model.train(was_training)
    return losses


def _reference_losses(stages: list[Stage], dense, work: Path, config: RecoverConfig, accelerator: Accelerator) -> None:
    """The dense model's held-out loss per category, measured once and cached in the run folder."""
    cache = work / "reference_losses.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        for s in stages:
            s.reference = cached.get(s.name, {})
        if all(s.reference for s in stages):
            return
    if dense is None:
        return  # uniform mix without a dense model: no reference, excess losses are logged as 0
    for s in stages:
        s.reference = category_losses(dense, s.stream.categories, config, accelerator)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        cache.write_text(json.dumps({s.name: s.reference for s in stages}, indent=2))


def train_step(model, teacher, optimizer, scheduler, stage: Stage, config: RecoverConfig, accelerator: Accelerator) -> dict:
    """One optimiser step of `grad_accum` micro-batches; returns the step's mean losses and global token count."""
    rank, world = accelerator.process_index, accelerator.num_processes
    sums: dict[str, float] = {}
    tokens = torch.zeros((), dtype=torch.long, device=accelerator.device)
    for _ in range(config.grad_accum):
        ids, labels, _picks = stage.stream.next_batch(stage.mixture.weights, config.batch_size * world)
        ids = shard_rows(ids, rank, world).to(accelerator.device)
        labels = shard_rows(labels, rank, world).to(accelerator.device)
        tokens += ids.numel()
        with accelerator.accumulate(model):
            logits = model(input_ids=ids).logits
            teacher_logits = None
            if teacher is not None:
                with torch.no_grad(), accelerator.autocast():
                    teacher_logits = teacher(input_ids=ids).logits
            loss, parts = recovery_loss(logits, labels, teacher_logits, config.kd_weight, config.kd_temperature)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()  # Accelerate skips these until the last micro-batch of the step
            if accelerator.sync_gradients:
                scheduler.step()
            optimizer.zero_grad()
        for key, value in {"loss": float(loss.detach()), **parts}.items():
            sums[key] = sums.get(key, 0.0) + value / config.grad_accum
    keys = sorted(sums)
    means = accelerator.reduce(torch.tensor([sums[k] for k in keys], device=accelerator.device), reduction="mean")
    record = dict(zip(keys, means.tolist(), strict=True))
    record["tokens"] = int(accelerator.reduce(tokens, reduction="sum"))
    return record


def save_checkpoint(accelerator: Accelerator, work: Path, state: RunState, keep: int) -> Path:
    """Accelerate's full state (model, optimizer, scheduler, RNG, RunState), then the completion marker."""
    path = ckpt.checkpoint_dir(work, state.step)
    accelerator.save_state(str(path))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        ckpt.mark_complete(path, state.step, state.tokens_seen)
        ckpt.prune_checkpoints(work, keep)
    accelerator.wait_for_everyone()
    return path


def save_merged(accelerator: Accelerator, model, tokenizer, config: RecoverConfig, work: Path) -> int:
    """Merge LoRA into the pruned weights and save a folder that loads the way the pruned model did.

    Returns the merged model's parameter count (0 on processes other than the main one).
    """
    # get_state_dict gathers sharded (FSDP) weights; every process must take part.
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        # Rebuild through the same loader as the input (plain HF or lorashear's pruned layout) and merge there.
        fresh = _lora_model(load_pruned_base(config.pruned, "cpu"), config)
        fresh.load_state_dict({k: v.to("cpu") for k, v in state_dict.items()})
        merged = fresh.merge_and_unload()
        merged.config.use_cache = True
        merged.save_pretrained(work)
        tokenizer.save_pretrained(work)
        ckpt.copy_model_extras(Path(resolve_model(config.pruned).location), work)
    accelerator.wait_for_everyone()
    return count_parameters(merged) if accelerator.is_main_process else 0


def _write_mixture_log(stages: list[Stage], work: Path) -> None:
    (work / "logs").mkdir(parents=True, exist_ok=True)
    (work / "logs" / "mixture.json").write_text(json.dumps({s.name: s.mixture.history for s in stages}, indent=2))
