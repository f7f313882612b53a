"""The recovery recipe (LoRAShear stage 4), top to bottom: setup, `train(lora_run(...), ...)`, save.

LoRA fine-tuning of a pruned model on the shared training loop (`lorashear.train`), in two stages:
pretraining-like text, then instructions. In each stage the categories' sampling weights follow
their held-out loss relative to the dense model (`stages.py`, `mixture.py`); distillation from the
dense model is optional. One process or `accelerate launch` (DDP; FSDP: both models sharded, `train.sharding`)
alike; see configs/accelerate/ and docs/multi-gpu.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from lorashear.errors import LorashearError
from lorashear.models import (
    dtype_name,
    load_tokenizer,
    release_memory,
    resolve_dtype,
    resolve_model,
)
from lorashear.recover.config import RecoverConfig
from lorashear.recover.logs import plot_run
from lorashear.recover.losses import recovery_loss
from lorashear.recover.stages import (
    INSTRUCT,
    PRETRAIN,
    RecoveryStage,
    StagedMixture,
    category_losses,
    make_stage,
    reference_losses,
)
from lorashear.recover.streams import instruction_categories, text_categories
from lorashear.train import LossFn, lora_run, make_accelerator, save_merged, train
from lorashear.train import checkpoint as ckpt
from lorashear.train.accelerator import process_peaks
from lorashear.train.logs import read_jsonl
from lorashear.train.lora import load_for_lora, load_frozen

CONFIG_FILE = "recover_config.yaml"


@dataclass
class RecoveryResult:
    """What a run produced; `finished` is False when it stopped early (`stop_after_steps`) for a later --resume."""

    out: Path
    finished: bool
    steps: int
    tokens_seen: int
    final_losses: dict[str, dict[str, float]] = field(default_factory=dict)
    reference_losses: dict[str, dict[str, float]] = field(default_factory=dict)
    main_process: bool = True  # one of several processes reports (the others return the same result)


def recover(config: RecoverConfig) -> RecoveryResult:
    """Run knowledge recovery as configured; returns where the merged model and logs are."""
    config.validate()
    # ------------------------------------------------------------------ setup
    accelerator = make_accelerator(config)
    # Everything that can be wrong with the input fails here, before the run folder exists.
    work = ckpt.check_run_dir(config.out, config.resume)
    if config.resume:
        config.check_same_run(work / CONFIG_FILE)
    for spec in (config.pruned, config.dense):
        if spec is not None:
            resolve_model(spec)
    set_seed(config.seed)
    tokenizer = _tokenizer(config)
    tokens_per_step = config.batch_size * config.seq_len * config.grad_accum * accelerator.num_processes
    stages = _stages(config, tokenizer, tokens_per_step)
    total_steps = stages[-1].end

    accelerator.wait_for_everyone()  # every process has checked before anyone writes
    if accelerator.is_main_process:
        ckpt.start_run_dir(work, config.resume)
        config.save(work / CONFIG_FILE)
    accelerator.wait_for_everyone()

    dtype = resolve_dtype(config.dtype, accelerator.device)
    dense = None
    if config.dense is not None and (config.kd_weight > 0 or not (work / "reference_losses.json").is_file()):
        dense = load_frozen(config.dense, accelerator, dtype)
    reference_losses(stages, dense, work, config, accelerator)
    teacher = dense if config.kd_weight > 0 else None
    if teacher is None:
        del dense  # the reference losses are cached: freed before the pruned model loads
        release_memory(accelerator.device)

    # ------------------------------------------------------------------ train
    data = StagedMixture(stages, config, work)
    run = train(
        lora_run(load_for_lora(config.pruned, accelerator, config, dtype), config, accelerator, work, total_steps,
                 frozen_base=True),  # recovery edits no base weight: checkpoints hold LoRA, optimizer, RNG only
        data.next_batch, _loss_fn(teacher, config, accelerator), [data],
        desc="recover", postfix=lambda record: {"stage": record["stage"]},
    )
    if not run.finished:
        return RecoveryResult(Path(config.out), False, run.step, run.tokens_seen)

    # ------------------------------------------------------------------ save
    final = {s.name: category_losses(run.model, s.stream.categories, config, accelerator) for s in stages}
    parameters = save_merged(accelerator, run.model, tokenizer, config.pruned, config, work, dtype)
    peaks = process_peaks(accelerator)
    accelerator.print("peak memory per process: " + ", ".join(f"{p / 2**20:,.0f} MiB" for p in peaks))
    out = Path(config.out).expanduser().absolute()
    if accelerator.is_main_process:
        data.write_log()
        summary = {
            "steps": run.step,
            "tokens_seen": run.tokens_seen,
            "num_processes": accelerator.num_processes,
            "tokens_per_step": tokens_per_step,
            "mixed_precision": accelerator.mixed_precision,
            "dtype": dtype_name(dtype),
            "parameters": parameters,
            "sharded": run.sharded,
            "peak_memory_bytes": peaks,  # per process: CUDA's peak allocated, else the peak resident set
            "final_losses": final,
            "reference_losses": {s.name: s.reference for s in stages},
        }
        (work / "recovery.json").write_text(json.dumps(summary, indent=2))
        plot_run(read_jsonl(work / "logs" / "steps.jsonl"), data.histories(), work / "plots")
        ckpt.finish(work, out)
    accelerator.wait_for_everyone()
    return RecoveryResult(out, True, run.step, run.tokens_seen, final, {s.name: s.reference for s in stages},
                          accelerator.is_main_process)


# ---------------------------------------------------------------------- pieces of the recipe


def _tokenizer(config: RecoverConfig):
    """The pruned folder's tokenizer, else the dense model's (pruning never changes the vocabulary)."""
    try:
        return load_tokenizer(config.pruned)
    except LorashearError:
        if config.dense is None:
            raise
        return load_tokenizer(config.dense)


def _stages(config: RecoverConfig, tokenizer, tokens_per_step: int) -> list[RecoveryStage]:
    """Stage 1 (pretraining-like text) and stage 2 (instructions), each with its share of the tokens in steps."""
    stage1_tokens = round(config.tokens * config.stage_split)
    steps1 = math.ceil(stage1_tokens / tokens_per_step)
    steps2 = math.ceil((config.tokens - stage1_tokens) / tokens_per_step)
    stages = []
    if steps1:
        cats = text_categories(config.data, tokenizer, config.seq_len, config.held_out, config.seed)
        stages.append(make_stage(PRETRAIN, cats, 0, steps1, config))
    if steps2:
        cats = instruction_categories(config.instruct, tokenizer, config.seq_len, config.held_out, config.seed)
        stages.append(make_stage(INSTRUCT, cats, steps1, steps1 + steps2, config))
    return stages


def _loss_fn(teacher, config: RecoverConfig, accelerator: Accelerator) -> LossFn:
    """Cross-entropy on the labelled tokens, mixed with distillation from `teacher` when kd_weight > 0."""

    def loss(model, ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(input_ids=ids).logits
        teacher_logits = None
        if teacher is not None:
            with torch.no_grad(), accelerator.autocast():
                teacher_logits = teacher(input_ids=ids).logits
        return recovery_loss(logits, labels, teacher_logits, config.kd_weight, config.kd_temperature)

    return loss
