"""Physically remove groups from a model (LoRA factors included), keeping it equal to the zeroed model.

Equivalence: `compress(model, groups)` gives the same outputs as `zero_groups(model, groups)`,
except around LayerNorm (gpt2, opt): there a removed hidden channel is *dropped from* the
norm's statistics (mean and variance over the kept channels), which zeroing cannot express.

`add_output_bias` gives linear layers a bias (FLAP's compensation); it is recorded in
`config.lorashear` beside the removed indices, so that export and the loaders rebuild it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from lorashear.errors import LorashearError
from lorashear.graph.structures import Group
from lorashear.models import count_parameters
from lorashear.pruned.modeling_lorashear import (
    TensorEdit,
    _base,
    add_zero_bias,
    head_counts,
    in_out_features,
    is_attention,
    is_rms_norm,
    norm_eps_attr,
    shrink,
)

# Config attributes of the intermediate (MLP) size, by architecture family.
INTERMEDIATE_ATTRS = ("intermediate_size", "n_inner", "ffn_dim")
# MLP input projections whose output size is the intermediate size (gate_up_proj is fused: 2x).
MLP_INPUTS = {"gate_proj": 1, "up_proj": 1, "c_fc": 1, "fc1": 1, "gate_up_proj": 2}
PEFT_PREFIX = "base_model.model."


def removed_indices(groups: list[Group]) -> dict[str, dict[int, list[int]]]:
    """Union of the groups' slices: {state_dict name: {dim: sorted indices}}."""
    union: dict[str, dict[int, set[int]]] = {}
    for group in groups:
        for s in group.slices:
            union.setdefault(s.param, {}).setdefault(s.dim, set()).update(s.index)
    return {p: {d: sorted(ix) for d, ix in dims.items()} for p, dims in union.items()}


def _with_output_biases(model: nn.Module, removed: dict[str, dict[int, list[int]]]) -> dict:
    """`removed` plus the bias rows of every linear layer that loses output rows: groups built
    before `add_output_bias` do not list those biases."""
    state = model.state_dict(keep_vars=True)
    complete = dict(removed)
    for name, dims in removed.items():
        prefix, _, leaf = name.rpartition(".")
        bias = f"{prefix}.bias"
        if leaf == "weight" and 0 in dims and bias in state and bias not in removed:
            if isinstance(model.get_submodule(prefix), nn.Linear):
                complete[bias] = {0: dims[0]}
    return complete


def zero_groups(model: nn.Module, groups: list[Group]) -> None:
    """Set every slice of the groups to zero in place (the reference that `compress` must match)."""
    state = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for name, dims in _with_output_biases(model, removed_indices(groups)).items():
            t = state[name]
            for d, ix in dims.items():
                t.index_fill_(d, torch.tensor(ix, dtype=torch.long, device=t.device), 0.0)


@contextmanager
def zeroed(model: nn.Module, groups: list[Group]) -> Iterator[None]:
    """Zero the groups' slices in place for the duration of the block, then restore them exactly.

    Only the affected slices are copied, so probing a 7B model needs no second model.
    """
    state = model.state_dict(keep_vars=True)
    saved = []
    with torch.no_grad():
        for name, dims in _with_output_biases(model, removed_indices(groups)).items():
            t = state[name]
            for d, ix in dims.items():
                index = torch.tensor(ix, dtype=torch.long, device=t.device)
                saved.append((t, d, index, t.index_select(d, index)))
        for t, d, index, _ in saved:
            t.index_fill_(d, index, 0.0)
    try:
        yield
    finally:
        with torch.no_grad():
            for t, d, index, values in reversed(saved):  # reversed: overlapping slices end as they began
                t.index_copy_(d, index, values)


def base_name(name: str) -> str | None:
    """The state_dict name in the model without peft (None for LoRA factors)."""
    if ".lora_" in name:
        return None
    if name.startswith(PEFT_PREFIX):
        name = name[len(PEFT_PREFIX) :]
    return name.replace(".base_layer.", ".")


def base_model_of(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def count_params(model: nn.Module) -> int:
    """Parameters of the base model (LoRA factors excluded: they merge into it; tied counted once)."""
    return count_parameters(model, include_lora=False)


def compression_record(config) -> dict:
    """`config.lorashear`, complete: what earlier compressions removed and added (none for a new model).

    A loaded plain folder's record says only `plain`: its config is the architecture, its own start.
    """
    info = {"version": 1, "removed": [], "original": {}, "biases": {}, **(getattr(config, "lorashear", None) or {})}
    info.pop("plain", None)
    return info


def add_output_bias(model: nn.Module, module_names: list[str]) -> None:
    """Give the named linear layers (of a LoRA layer: its base layer) a zero bias, unless they have one.

    Names as in `model.named_modules()`. The biases are recorded in `config.lorashear`, so export and
    the loaders rebuild them; fill them in afterwards.
    """
    base = base_model_of(model)
    info = compression_record(base.config)
    modules = dict(model.named_modules())
    for name in module_names:
        if name not in modules:
            raise LorashearError(f"no module {name!r} in the model; pass names from model.named_modules()")
        layer = _base(modules[name])
        if getattr(layer, "bias", None) is not None:  # e.g. gpt2's Conv1D: it has one already
            continue
        if not isinstance(layer, nn.Linear) or ".lora_" in name:
            raise LorashearError(f"{name} is not a linear layer of the model ({type(layer).__name__}); only those get a bias")
        add_zero_bias(layer)
        info["biases"][base_name(f"{name}.weight").removesuffix(".weight")] = len(info["removed"])
    if info["biases"]:
        base.config.lorashear = info


def compress(model: nn.Module, groups: list[Group]) -> nn.Module:
    """Remove the union of the groups' slices from `model` (in place) and fix its modules and config."""
    _compress(model, groups)
    return model


def compress_skeleton(skeleton: nn.Module, groups: list[Group]) -> dict[str, TensorEdit]:
    """`compress` of a model on the meta device (sizes, modules and config, no values), and what it does to each
    tensor that changes, by state_dict name: `export(..., weights=FolderWeights(folder, edits))` then streams the
    values from the uncompressed model's folder through those edits, one tensor at a time."""
    live = [n for n, p in skeleton.named_parameters() if p.device.type != "meta"]
    if live:
        raise LorashearError(f"compress_skeleton takes a model on the meta device; {live[0]} holds values "
                             "(use compress for a loaded model)")
    return _compress(skeleton, groups)["tensors"]


def _compress(model: nn.Module, groups: list[Group]) -> dict:
    """`compress`, returning `shrink`'s report (what changed, per module and per tensor)."""
    if not groups:
        raise LorashearError("nothing to remove: the list of groups is empty")
    removed = _with_output_biases(model, removed_indices(groups))
    state_names = set(model.state_dict().keys())
    missing = sorted(set(removed) - state_names)
    if missing:
        raise LorashearError(
            f"{len(missing)} sliced parameters are not in the model (first: {missing[0]!r}); "
            "build the groups from this very model (with or without its LoRA adapter, as given)"
        )
    base = base_model_of(model)
    config = base.config
    before = _config_snapshot(base)
    report = shrink(model, removed, compensate=True)
    for name, module in model.named_modules():
        if is_attention(module) and head_counts(module)[0] == 0:
            raise LorashearError(
                f"{name} has no attention head left; remove whole attention blocks with the "
                "attention_block kind instead of every head"
            )
    _update_config(base)
    after = _config_snapshot(base)
    info = compression_record(config)
    info["removed"].append(
        {b: {str(d): ix for d, ix in dims.items()} for n, dims in removed.items() if (b := base_name(n))}
    )
    for key, value in before.items():
        if after.get(key) != value:
            info["original"].setdefault(key, value)
    info["removed_modules"] = {
        **info.get("removed_modules", {}),
        **{base_name(n) or n: k for n, k in report["removed_modules"].items()},
    }
    config.lorashear = info
    return report


def _config_snapshot(model: nn.Module) -> dict:
    c = model.config
    keys = (
        "hidden_size",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "rms_norm_eps",
        *INTERMEDIATE_ATTRS,
    )
    return {k: getattr(c, k) for k in keys if hasattr(c, k)}


def layer_shapes(model: nn.Module) -> dict[str, list]:
    """Per-layer head counts and intermediate sizes of the live (not removed) blocks."""
    heads, inter = [], []
    for name, module in model.named_modules():
        if is_attention(module):
            heads.append((name, *head_counts(module)))
        leaf = name.rpartition(".")[2]
        if leaf in MLP_INPUTS and hasattr(_base(module), "weight") and ".attn" not in name and "attention" not in name:
            inter.append((name.rpartition(".")[0], in_out_features(module)[1] // MLP_INPUTS[leaf]))
    # One entry per MLP (gate and up give the same size).
    return {"heads": heads, "intermediate": sorted(set(inter))}


def _update_config(model: nn.Module) -> None:
    """Write the new sizes into the config: the common value, or the largest where layers differ."""
    c = model.config
    c.hidden_size = model.get_input_embeddings().weight.shape[1]
    shapes = layer_shapes(model)
    if shapes["heads"]:
        c.num_attention_heads = max(q for _, q, _ in shapes["heads"])
        if hasattr(c, "num_key_value_heads"):
            c.num_key_value_heads = max(kv for _, _, kv in shapes["heads"])
        for module in model.modules():
            if is_attention(module):
                c.head_dim = int(module.head_dim)
                break
    if shapes["intermediate"]:
        attr = next((a for a in INTERMEDIATE_ATTRS if hasattr(c, a)), None)
        if attr:
            setattr(c, attr, max(n for _, n in shapes["intermediate"]))
    if hasattr(c, "rms_norm_eps"):
        norm = getattr(model.get_decoder(), "norm", None) if hasattr(model, "get_decoder") else None
        if norm is not None and is_rms_norm(norm) and norm_eps_attr(norm):
            c.rms_norm_eps = getattr(norm, norm_eps_attr(norm))
