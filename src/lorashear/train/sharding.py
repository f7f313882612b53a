"""Fully sharded training (FSDP2, torch's `fully_shard`) for a model larger than one device.

`accelerate launch --config_file configs/accelerate/fsdp.yaml` (GPUs) or `fsdp_cpu_2proc.yaml` (CPU processes, the
tests) asks for it: accelerate sets ACCELERATE_USE_FSDP and FSDP_VERSION for every process. Accelerate still drives
the processes (NCCL or gloo), gradient accumulation, clipping, RNG and hook state; lorashear shards the model itself,
because accelerate's FSDP loading reads the whole model on the main process and its FSDP path does not run on CPUs:

- `load_sharded`: the model's skeleton on the meta device (LoRA attached there too) is sharded decoder layer by
  decoder layer (every parameter's rows split across the processes, `Shard(0)`), then each process reads its own rows
  of every weight from the safetensors files. No process holds the whole model at any time.
- checkpoints (`save_state`/`load_state`): torch.distributed.checkpoint, each process writing its own shards.
- `merge_lora_`: W ← W + s·BA on each process's rows (A, r × in, is gathered: small); `save_pretrained`: HF
  safetensors files whose headers follow from the shapes, each tensor gathered and streamed into place in turn.

Reading and writing a sharded tensor where a process holds it: `lorashear.distributed`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from accelerate import init_empty_weights
from torch import nn
from transformers.utils.hub import convert_file_size_to_int

from lorashear.compress.export import MAX_SHARD_SIZE, save_configs, saved_tensors
from lorashear.distributed import full_tensor, local_rows
from lorashear.errors import LorashearError
from lorashear.importance.base import lora_delta_rows
from lorashear.io import write_safetensors
from lorashear.models import load_skeleton, resolve_model
from lorashear.pruned import ADAPTER_DIR

ACCELERATE_FLAG = "ACCELERATE_USE_FSDP"
OWN_FLAG = "LORASHEAR_FSDP"
SHARDED_DIR = "sharded"  # a checkpoint's torch.distributed.checkpoint folder


# ---------------------------------------------------------------------- what the launch asked for


def requested() -> bool:
    """True when `accelerate launch` was given an FSDP config (it sets ACCELERATE_USE_FSDP on every process;
    `take_over` turns that into LORASHEAR_FSDP)."""
    return os.environ.get(OWN_FLAG) == "1" or os.environ.get(ACCELERATE_FLAG, "false").lower() == "true"


def take_over() -> bool:
    """Before the Accelerator is made: when FSDP was asked for, hide it from Accelerate (which would shard again in
    `prepare`, or refuse on CPUs) and keep it as LORASHEAR_FSDP; the Accelerator then runs the processes only."""
    check_launch()
    wanted = requested()
    if wanted:
        os.environ[OWN_FLAG] = "1"
        os.environ[ACCELERATE_FLAG] = "false"
        if os.environ.get("ACCELERATE_USE_CPU") or not torch.cuda.is_available():
            fixed_mmap_threshold()
    return wanted


MMAP_THRESHOLD = 1 << 20  # bytes: glibc serves larger blocks with mmap and hands them back to the system on free


def fixed_mmap_threshold() -> bool:
    """CPU processes: fix glibc's mmap threshold (mallopt M_MMAP_THRESHOLD). By default glibc raises it after each
    large free, so the next gathered layers land on the heap, which does not shrink: measured on 2 CPU processes
    (50M parameters), each process's resident peak grew by the all-gathers to 1.1-1.5 GB, 0.64 GB with it fixed.
    False where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return bool(libc.mallopt(-3, MMAP_THRESHOLD))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError, TypeError):
        return False


def check_launch() -> None:
    """Refuse what this sharded path does not run: DeepSpeed, FSDP version 1. Called before any work."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        raise LorashearError("DeepSpeed is not supported: lorashear shards models with FSDP2; launch with "
                             "configs/accelerate/fsdp.yaml (GPUs) or fsdp_cpu_2proc.yaml (CPU processes) instead")
    if requested() and os.environ.get("FSDP_VERSION", "1") != "2":
        raise LorashearError("lorashear shards with FSDP2 only: set `fsdp_version: 2` in the accelerate config "
                             "(configs/accelerate/fsdp.yaml has it)")


def launched() -> bool:
    """Before an Accelerator exists: FSDP was asked for and several processes were started."""
    return requested() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def active(accelerator) -> bool:
    """Whether this run shards its models: FSDP was asked for and several processes run."""
    return requested() and accelerator.num_processes > 1


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


# ---------------------------------------------------------------------- sharding and loading


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks FSDP shards one unit at a time: modules of the classes the HF model names in
    `_no_split_modules` (LlamaDecoderLayer, ...)."""
    names = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise LorashearError(f"{type(model).__name__} names no decoder layer class (`_no_split_modules`); "
                             "FSDP sharding needs one")
    return layers


def shard(model: nn.Module, device: torch.device) -> nn.Module:
    """FSDP2 on `model` (in place): each decoder layer one unit, the rest (embeddings, norm, head) the root's.
    A model on the meta device stays there (`load_sharded` materialises each process's rows)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def load_sharded(spec: str, device: torch.device, dtype: torch.dtype,
                 attach_lora: Callable[[nn.Module], nn.Module] | None = None) -> nn.Module:
    """The model of `spec` sharded across the processes (`shard`), each process reading only its rows of each weight
    from the safetensors files. `attach_lora(model)` (peft LoRA) runs on the skeleton first; the factors are then
    initialised as peft initialises them for one process (`init_lora_like_peft`): a sharded run starts where a
    single process would."""
    source = resolve_model(spec)
    folder = Path(source.location)
    if source.adapter or not source.is_local or (folder / ADAPTER_DIR).is_dir():
        raise LorashearError(f"sharded loading reads a model folder of safetensors files without an adapter; {spec} "
                             "is not one (merge its LoRA adapter first: `lorashear recover` does, or prune without --lora)")
    model = load_skeleton(str(folder), dtype)
    if attach_lora is not None:
        with init_empty_weights(include_buffers=False):  # the LoRA factors on the meta device too, nothing drawn
            model = attach_lora(model)
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}  # real: init_empty_weights keeps them
    shard(model, device)
    model.to_empty(device=device)
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
        _read_rows(model, folder)
        if attach_lora is not None:
            init_lora_like_peft(model)
    return model


def base_name(name: str) -> str:
    """A peft parameter name as the checkpoint names it (`base_model.model.` and `.base_layer` dropped)."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def _read_rows(model: nn.Module, folder: Path) -> None:
    """Copy each process's rows of every (non-LoRA) parameter from the folder's safetensors files."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise LorashearError(f"no safetensors files in {folder}; sharded loading reads safetensors only")
    wanted = {base_name(n): p for n, p in model.named_parameters() if ".lora_" not in n}
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu", backend="pread") as f:
            for key in f.keys():
                param = wanted.pop(key, None)
                if param is None:
                    continue
                local, start = local_rows(param)
                stored = f.get_slice(key)
                if list(stored.get_shape()) != list(param.shape):
                    raise LorashearError(f"{key} is {stored.get_shape()} in {file.name} but the model's is "
                                         f"{list(param.shape)}")
                if local.shape[0]:
                    local.copy_(stored[start:start + local.shape[0]].to(local.dtype))
    if wanted:
        raise LorashearError(f"{folder}: {len(wanted)} weights of the model are not in its safetensors files "
                             f"(e.g. {next(iter(wanted))}); sharded loading needs every weight by its own name")


def lora_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """peft LoRA Linear layers of `model`, in module order."""
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and hasattr(module, "base_layer") and len(module.lora_A):
            yield name, module


@torch.no_grad()
def init_lora_like_peft(model: nn.Module) -> None:
    """Each LoRA A ← what peft's default init draws for it (layers in module order, from the global RNG, as
    `get_peft_model` on a real model does: nn.Linear(in, r) and nn.Linear(r, out) are built — each a kaiming draw —
    then A is drawn again), B ← 0; every process draws the whole factor and keeps its rows."""
    for _, layer in lora_layers(model):
        for adapter in layer.lora_A:
            a, b = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
            full_a = nn.Linear(a.shape[1], a.shape[0], bias=False).weight.detach()
            nn.Linear(b.shape[1], b.shape[0], bias=layer.lora_B[adapter].bias is not None)  # draws, as peft's does
            nn.init.kaiming_uniform_(full_a, a=math.sqrt(5))
            local, start = local_rows(a)
            local.copy_(full_a[start:start + local.shape[0]].to(local.dtype))
            local_rows(b)[0].zero_()


# ---------------------------------------------------------------------- merge and save


@torch.no_grad()
def merge_lora_(model: nn.Module) -> None:
    """W ← W + s·BA (float32, rounded once to W's dtype) on each process's rows of every LoRA layer; B ← 0 after."""
    for _, layer in lora_layers(model):
        merge_layer_rows_(layer)


@torch.no_grad()
def merge_layer_rows_(layer: nn.Module) -> None:
    """`merge_lora_` of one peft LoRA Linear layer: W[rows] ← W[rows] + s·B[rows]·A (`lora_delta_rows`, summed over
    its adapters in float32, rounded once, as one process merges), then B ← 0."""
    w = local_rows(layer.base_layer.weight)[0]
    delta = lora_delta_rows(layer)
    if delta is not None and w.shape[0]:
        w.copy_((w.float() + delta).to(w.dtype))
    merged = set(getattr(layer, "merged_adapters", []))
    for adapter in layer.active_adapters:
        if adapter in layer.lora_B and adapter not in merged:
            local_rows(layer.lora_B[adapter].weight)[0].zero_()


def save_pretrained(model: nn.Module, folder: Path, is_main: bool, max_shard_size: int | str = MAX_SHARD_SIZE) -> None:
    """The model's weights (LoRA left out: merge it first) as HF safetensors files in `folder`, with its config.
    The files' layout follows from the tensors' shapes alone, so each file's header is written first and every
    tensor streams into place as it is gathered (`io.write_safetensors`): the main process holds one whole tensor at a
    time. Every process must call it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    tensors = [(base_name(n), t) for n, t in saved_tensors(base) if ".lora_" not in n]
    by_name = dict(tensors)
    # collective: every process gathers each tensor, the main one writes it
    write_safetensors(folder, [(name, t.shape, t.dtype) for name, t in tensors],
                      lambda name: full_tensor(by_name[name].detach()), convert_file_size_to_int(max_shard_size),
                      write=is_main)
    if is_main:
        save_configs(base, folder)


# ---------------------------------------------------------------------- checkpoints


def save_state(model: nn.Module, optimizer, path: Path, trainable_only: bool, extra: dict | None = None) -> None:
    """Model (its trainable parameters only with `trainable_only`) and optimizer state, and `extra` (hooks' sharded
    state), each process its shards, under `path/sharded` (torch.distributed.checkpoint). Every process calls it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(ignore_frozen_params=trainable_only)
    model_state, optimizer_state = get_state_dict(model, optimizer, options=options)
    dcp.save({"model": model_state, "optimizer": optimizer_state, "extra": extra or {}},
             checkpoint_id=str(path / SHARDED_DIR))


def load_state(model: nn.Module, optimizer, path: Path, trainable_only: bool, extra: dict | None = None) -> None:
    """What `save_state` wrote, back into the sharded model and optimizer, and into `extra`'s tensors in place."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

    options = StateDictOptions(ignore_frozen_params=trainable_only)
    model_state, optimizer_state = get_state_dict(model, optimizer, options=options)
    state = {"model": model_state, "optimizer": optimizer_state, "extra": extra or {}}
    dcp.load(state, checkpoint_id=str(path / SHARDED_DIR))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=StateDictOptions(ignore_frozen_params=trainable_only, strict=not trainable_only))
