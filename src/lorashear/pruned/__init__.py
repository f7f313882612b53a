"""Pruned folders: the architecture with per-layer widths and how such a folder loads.

`modeling_lorashear.py` defines the pruned model classes; `export` (lorashear.compress) ships a copy of it in
every folder whose layers differ (loaded with `trust_remote_code`, or here without it), and `compress` builds
its blocks from it. The file imports nothing of lorashear: it must run inside an exported folder alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from lorashear.errors import LorashearError
from lorashear.pruned import modeling_lorashear as remote

REMOTE_FILE = Path(remote.__file__)  # copied into every exported folder that needs it
ADAPTER_DIR = "adapter"  # a kept LoRA adapter's subfolder (`prune --lora`)


def is_pruned_folder(folder: str | Path) -> bool:
    """True for folders written by `export` (config.json has a `lorashear` key)."""
    config = Path(folder) / "config.json"
    return config.is_file() and "lorashear" in json.loads(config.read_text())


def load_pruned(
    folder: str | Path, device: str | torch.device | None = None, dtype: torch.dtype = torch.float32, **load_kwargs
) -> nn.Module:
    """Load a folder written by `export` (with its LoRA adapter, if one was kept); `load_kwargs` go to
    `from_pretrained` (device_map, max_memory, offload_folder)."""
    folder = Path(folder)
    if not is_pruned_folder(folder):
        raise LorashearError(
            f"{folder} is not a lorashear-pruned model folder (no `lorashear` key in config.json)"
        )
    config = AutoConfig.from_pretrained(folder)
    if config.lorashear.get("plain"):
        model = AutoModelForCausalLM.from_pretrained(folder, config=config, dtype=dtype, **load_kwargs)
    else:
        # Our own copy of the remote code: no trust_remote_code needed.
        stock = AutoModelForCausalLM._model_mapping[type(config)]
        model = remote._pruned_class(stock).from_pretrained(folder, config=config, dtype=dtype, **load_kwargs)
    if (folder / ADAPTER_DIR).is_dir():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, folder / ADAPTER_DIR)
    if device is not None:
        model = model.to(device)
    return model.eval()


def pruned_skeleton(folder: str | Path, config, dtype: torch.dtype) -> nn.Module:
    """The architecture of a folder written by `export`, built from its config alone (call it under
    accelerate's `init_empty_weights` for a model without weights: `lorashear.models.load_skeleton`)."""
    if config.lorashear.get("plain"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)
    stock = AutoModelForCausalLM._model_mapping[type(config)]
    return remote._pruned_class(stock)._from_config(config, dtype=dtype)


__all__ = ["ADAPTER_DIR", "REMOTE_FILE", "is_pruned_folder", "load_pruned", "pruned_skeleton"]
