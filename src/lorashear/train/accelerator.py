"""The Accelerator of every trained stage: gradient accumulation, precision, one job across processes."""

from __future__ import annotations

import os
import resource

import torch
from accelerate import Accelerator

from lorashear.errors import LorashearError
from lorashear.train import sharding
from lorashear.train.config import LoopConfig


def make_accelerator(config: LoopConfig) -> Accelerator:
    """An Accelerator with gradient accumulation and bf16 autocast on GPUs that support it. Under an FSDP launch it
    runs the processes only: lorashear shards the models itself (`sharding`)."""
    sharding.take_over()
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


def process_peaks(accelerator: Accelerator) -> list[int]:
    """Every process's peak memory so far, in bytes, on every process: on CUDA the most the allocator held
    (torch.cuda.max_memory_allocated), on CPUs the peak resident set (getrusage; Linux counts KiB)."""
    device = accelerator.device
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else host_peak()
    mine = torch.tensor([peak], dtype=torch.long, device=device)
    return [int(v) for v in accelerator.gather(mine).tolist()] if accelerator.num_processes > 1 else [peak]


def host_peak() -> int:
    """This process's peak resident memory so far (host RAM), in bytes (getrusage; Linux counts KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
