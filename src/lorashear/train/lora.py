"""The one LoRA set-up of every trained stage: adapters, optimiser, `lora_run`, and the merge-and-save at the end."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator

from lorashear.models import count_parameters, load_model, resolve_model
from lorashear.train import checkpoint as ckpt
from lorashear.train.config import LoopConfig
from lorashear.train.loop import TrainRun


def load_pruned_base(spec: str, device) -> torch.nn.Module:
    """The pruned model without adapters: a LoRA adapter kept by `lorashear prune --lora` is merged first."""
    model = load_model(spec, device=device)
    if hasattr(model, "peft_config"):
        model = model.merge_and_unload()
    return model


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
             total_steps: int) -> TrainRun:
    """A run ready for `train`: LoRA on `model` → AdamW + cosine → `accelerator.prepare`; `run.unwrapped` is
    the PeftModel. A model that has LoRA already (`add_lora`: a method built its graph on it) trains as it is."""
    peft_model = model if hasattr(model, "peft_config") else add_lora(model, config)
    optimizer, scheduler = make_optimizer(peft_model, config, total_steps)
    prepared, optimizer, scheduler = accelerator.prepare(peft_model, optimizer, scheduler)
    return TrainRun(prepared, optimizer, scheduler, accelerator, config, total_steps, Path(work))


def save_merged(accelerator: Accelerator, model, tokenizer, base: str, config: LoopConfig, folder: Path) -> int:
    """Merge LoRA into the weights of `base` and save a folder that loads the way `base` did.

    Returns the merged model's parameter count (0 on processes other than the main one).
    """
    # get_state_dict gathers sharded (FSDP) weights; every process must take part.
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        # Rebuild through the same loader as the input (plain HF or lorashear's pruned layout) and merge there.
        fresh = add_lora(load_pruned_base(base, "cpu"), config)
        fresh.load_state_dict({k: v.to("cpu") for k, v in state_dict.items()})
        merged = fresh.merge_and_unload()
        merged.config.use_cache = True
        merged.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        ckpt.copy_model_extras(Path(resolve_model(base).location), folder)
    accelerator.wait_for_everyone()
    return count_parameters(merged) if accelerator.is_main_process else 0
