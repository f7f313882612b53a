"""The one LoRA set-up of every trained stage: adapters, optimiser, `lora_run`, and the merge-and-save at the end."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator

from lorashear.compress.export import MAX_SHARD_SIZE
from lorashear.models import count_parameters, load_model, merge_lora, resolve_dtype, resolve_model
from lorashear.train import checkpoint as ckpt
from lorashear.train import sharding
from lorashear.train.config import LoopConfig
from lorashear.train.loop import TrainRun

CHECKPOINTING_FROM = 1_000_000_000  # gradient_checkpointing "auto": on for models of at least this many parameters


def load_pruned_base(spec: str, device, dtype: str | torch.dtype = "auto") -> torch.nn.Module:
    """The pruned model without adapters: a LoRA adapter kept by `lorashear prune --lora` is merged first."""
    model = load_model(spec, device=device, dtype=dtype)
    if hasattr(model, "peft_config"):
        model = merge_lora(model)
    return model


def load_frozen(spec: str, accelerator: Accelerator, dtype: str | torch.dtype = "auto") -> torch.nn.Module:
    """A model only run forward (recovery's dense reference): sharded across the processes under FSDP
    (`sharding.load_sharded`), else whole on this process's device."""
    if sharding.active(accelerator):
        return sharding.load_sharded(spec, accelerator.device, resolve_dtype(dtype, accelerator.device)).eval()
    return load_model(spec, device=accelerator.device, dtype=dtype)


def load_for_lora(spec: str, accelerator: Accelerator, config: LoopConfig,
                  dtype: str | torch.dtype = "auto") -> torch.nn.Module:
    """The pruned model `lora_run` trains: under FSDP sharded across the processes with LoRA already attached (peft's
    initialisation, as one process would draw it), else `load_pruned_base` (lora_run attaches LoRA)."""
    if sharding.active(accelerator):
        return sharding.load_sharded(spec, accelerator.device, resolve_dtype(dtype, accelerator.device),
                                     attach_lora=lambda model: add_lora(model, config))
    return load_pruned_base(spec, accelerator.device, dtype)


def use_gradient_checkpointing(model: torch.nn.Module, setting: str) -> bool:
    """Switch on HF gradient checkpointing (non-reentrant) when `setting` is "true", or "auto" and the model has at
    least `CHECKPOINTING_FROM` parameters; returns whether it is on. Only training-mode forwards recompute."""
    on = setting == "true" or (setting == "auto" and count_parameters(model, include_lora=False) >= CHECKPOINTING_FROM)
    if on:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x's name
            base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return on


def stop_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Switch gradient checkpointing off again (a merged model is saved and evaluated without it)."""
    if not any(getattr(m, "gradient_checkpointing", False) for m in model.modules()):
        return
    if hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()


def lora_model(model: torch.nn.Module, r: int, alpha: int, dropout: float, targets: str | list[str]):
    """`model` with trainable LoRA adapters (peft) on its `targets` linear layers, in training mode."""
    from peft import LoraConfig, get_peft_model

    model.config.use_cache = False  # no KV cache while training
    lora = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    peft_model.train()
    return peft_model


def add_lora(model: torch.nn.Module, config: LoopConfig):
    """`model` with the LoRA adapters `config` asks for (`lora_model` with its r, alpha, dropout, targets)."""
    return lora_model(model, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_targets)


def make_optimizer(model: torch.nn.Module, config: LoopConfig, total_steps: int):
    """AdamW over the trainable parameters and a cosine schedule with `warmup_ratio` linear warm-up."""
    from transformers import get_cosine_schedule_with_warmup

    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, round(config.warmup_ratio * total_steps), total_steps)
    return optimizer, scheduler


def lora_run(model: torch.nn.Module, config: LoopConfig, accelerator: Accelerator, work: Path,
             total_steps: int, frozen_base: bool = False) -> TrainRun:
    """A run ready for `train`: LoRA on `model` → AdamW + cosine → `accelerator.prepare`; `run.unwrapped` is
    the PeftModel. A model that has LoRA already (`add_lora`: a method built its graph on it) trains as it is.
    `frozen_base`: nothing edits the base weights during the run, so checkpoints keep the LoRA state only."""
    peft_model = model if hasattr(model, "peft_config") else add_lora(model, config)
    if use_gradient_checkpointing(peft_model, config.gradient_checkpointing):
        accelerator.print("gradient checkpointing: on (activations recomputed in the backward pass)")
    optimizer, scheduler = make_optimizer(peft_model, config, total_steps)
    if sharding.is_sharded(peft_model):
        # Sharded already (load_for_lora): Accelerate's prepare would wrap it again; the loop checkpoints the
        # model and optimizer itself (torch.distributed.checkpoint) and the scheduler as a registered object.
        prepared = peft_model
    else:
        prepared, optimizer, scheduler = accelerator.prepare(peft_model, optimizer, scheduler)
    return TrainRun(prepared, optimizer, scheduler, accelerator, config, total_steps, Path(work),
                    frozen_base=frozen_base)


def save_merged(accelerator: Accelerator, model, tokenizer, base: str, config: LoopConfig, folder: Path,
                dtype: str | torch.dtype = "auto") -> int:
    """Merge LoRA into the weights of `base` and save a folder that loads the way `base` did, in the weights'
    dtype, in safetensors shards of at most `MAX_SHARD_SIZE`. One process merges the trained model in place, on
    its device (no copy; the run is over); under FSDP each process merges its rows and the main one writes the
    weights a tensor at a time (`sharding.save_pretrained`); DDP processes gather the state on the main process,
    which merges it into a fresh copy of `base` loaded in `dtype` there.

    Returns the merged model's parameter count (0 on processes other than the main one).
    """
    if sharding.is_sharded(model):  # each process merges its rows; the main one writes, a tensor at a time
        sharding.merge_lora_(model)
        model.get_base_model().config.use_cache = True
        sharding.save_pretrained(model, folder, accelerator.is_main_process)
        if accelerator.is_main_process:
            tokenizer.save_pretrained(folder)
            ckpt.copy_model_extras(Path(resolve_model(base).location), folder)
        accelerator.wait_for_everyone()
        return count_parameters(model, include_lora=False) if accelerator.is_main_process else 0
    if accelerator.num_processes == 1:
        merged = merge_lora(accelerator.unwrap_model(model))
    else:
        # DDP: every process holds the whole model; get_state_dict must run on all of them.
        state_dict = accelerator.get_state_dict(model)
        if accelerator.is_main_process:
            # Rebuild through the same loader as the input (plain HF or lorashear's pruned layout) and merge there.
            fresh = add_lora(load_pruned_base(base, "cpu", dtype), config)
            fresh.load_state_dict({k: v.to("cpu") for k, v in state_dict.items()})
            merged = merge_lora(fresh)
    if accelerator.is_main_process:
        merged.config.use_cache = True
        stop_gradient_checkpointing(merged)
        merged.save_pretrained(folder, max_shard_size=MAX_SHARD_SIZE)
        tokenizer.save_pretrained(folder)
        ckpt.copy_model_extras(Path(resolve_model(base).location), folder)
    accelerator.wait_for_everyone()
    return count_parameters(merged) if accelerator.is_main_process else 0
