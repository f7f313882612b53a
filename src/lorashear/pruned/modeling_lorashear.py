"""Structural shrinking of a Hugging Face model, shipped inside pruned model folders.

This file is copied next to the weights of a pruned model whose layers differ in shape, and is
loaded by stock transformers with `trust_remote_code=True`. It depends only on torch and
transformers. `lorashear.compress` imports the same functions, so the compressor and the loader
share one definition of "how a model shrinks".

`shrink(model, removed)` removes, for every state_dict tensor named in `removed`, the listed
indices along each dimension, replaces modules whose parameters are all removed by modules that
return zeros, and then re-derives every shape-dependent module attribute from the new shapes.
It reports what it did to each tensor (`TensorEdit`), so that a model shrunk on the meta device
(sizes only) can have its values streamed from the unshrunk files, one tensor at a time.
`add_zero_bias` gives a linear layer the output bias that a method added (FLAP's compensation).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

try:  # The dispatcher class needs transformers; the shrinking logic does not.
    from transformers import AutoModelForCausalLM, PreTrainedModel
except ImportError:  # pragma: no cover
    AutoModelForCausalLM = None
    PreTrainedModel = nn.Module

# Names of an attention's output projection (its input size is num_heads * head_dim).
OUTPUT_PROJECTIONS = ("o_proj", "out_proj", "c_proj", "dense")
# Eps attribute names of norm modules.
EPS_ATTRS = ("variance_epsilon", "eps")


@dataclass
class TensorEdit:
    """What `shrink` does to one tensor: in-place `steps` (a tensor method's name and its operand: the compensation
    that makes removal equal zeroing), then the indices kept along each dimension (`keep`)."""

    steps: list[tuple[str, float]] = field(default_factory=list)
    keep: dict[int, torch.Tensor] = field(default_factory=dict)

    def apply_steps_(self, t: torch.Tensor) -> None:
        for method, operand in self.steps:
            getattr(t, method)(operand)

    def cut(self, t: torch.Tensor) -> torch.Tensor:
        for d, keep in sorted(self.keep.items()):
            t = t.index_select(d, keep.to(t.device))
        return t.contiguous()

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        """The edited values of `t` (a new tensor; `t` is left as it is)."""
        if self.steps:
            t = t.clone()
            self.apply_steps_(t)
        return self.cut(t)


class RemovedAttention(nn.Module):
    """A removed attention block: outputs zeros, but still advances the KV cache of its layer."""

    def __init__(self, layer_idx: int | None, head_dim: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.head_dim = head_dim

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        cache = kwargs.get("past_key_values", kwargs.get("past_key_value"))
        if cache is not None and self.layer_idx is not None and hasattr(cache, "update"):
            # Zero-head keys keep the cache's length bookkeeping (get_seq_length) right at no cost.
            b, s = hidden_states.shape[0], hidden_states.shape[1]
            empty = hidden_states.new_zeros(b, 0, s, self.head_dim)
            cache.update(empty, empty, self.layer_idx)
        return torch.zeros_like(hidden_states), None

    def extra_repr(self) -> str:
        return f"layer_idx={self.layer_idx}"


class RemovedModule(nn.Module):
    """A removed block (MLP, or a norm/linear feeding only removed blocks): outputs zeros."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return torch.zeros_like(hidden_states)


def is_rms_norm(module: nn.Module) -> bool:
    """RMS-type norm: statistics are a mean of squares, so removing zero channels only rescales them."""
    return "RMSNorm" in type(module).__name__ or hasattr(module, "variance_epsilon")


def norm_eps_attr(module: nn.Module) -> str | None:
    for name in EPS_ATTRS:
        if isinstance(getattr(module, name, None), float):
            return name
    return None


def is_attention(module: nn.Module) -> bool:
    return hasattr(module, "head_dim") and any(hasattr(module, n) for n in OUTPUT_PROJECTIONS)


def _base(module: nn.Module) -> nn.Module:
    """The wrapped layer of a peft LoRA layer, or the module itself."""
    return getattr(module, "base_layer", module)


def in_out_features(module: nn.Module) -> tuple[int, int]:
    base = _base(module)
    w = base.weight
    if hasattr(base, "nf"):  # transformers' Conv1D stores (in, out)
        return w.shape[0], w.shape[1]
    return w.shape[1], w.shape[0]


def _removed_entries(model: nn.Module, removed: dict) -> dict[int, tuple[str, torch.Tensor, dict[int, set]]]:
    """Union of removed indices per tensor (tied tensors, listed under several names, merged)."""
    state = model.state_dict(keep_vars=True)
    entries: dict[int, tuple[str, torch.Tensor, dict[int, set]]] = {}
    for name, dims in removed.items():
        if name not in state:
            raise KeyError(f"{name!r} is not in the model's state_dict")
        t = state[name]
        entry = entries.setdefault(id(t), (name, t, {}))
        for d, idx in dims.items():
            entry[2].setdefault(int(d), set()).update(int(i) for i in idx)
    return entries


def _fully_removed_modules(model: nn.Module, entries: dict) -> list[str]:
    """Outermost modules whose every parameter has some dimension removed entirely."""
    full_tensors = {
        tid for tid, (_, t, dims) in entries.items() if any(len(ix) == t.shape[d] for d, ix in dims.items())
    }
    names: list[str] = []
    live_attention: list[str] = []  # projections inside a kept attention are cut, never replaced
    for name, module in model.named_modules():
        if any(name.startswith(n + ".") for n in names + live_attention):
            continue
        leaf = name.rpartition(".")[2]
        if leaf == "base_layer" or ".lora_" in name:  # a LoRA layer goes whole, with its factors
            continue
        params = list(module.parameters())
        if name and params and all(id(p) in full_tensors for p in params):
            names.append(name)
        elif is_attention(module):
            live_attention.append(name)
    return names


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def shrink(model: nn.Module, removed: dict, compensate: bool = False) -> dict:
    """Remove `removed` = {state_dict name: {dim: indices}} from `model` in place.

    With `compensate`, also rescale values so that the result equals the model with those
    entries zeroed (RMSNorm weights, scaled embeddings). Returns what was done: per module, and per
    state_dict name of every tensor that changed (`report["tensors"]`, `TensorEdit`s).
    """
    entries = _removed_entries(model, removed)
    report: dict = {"removed_modules": {}, "norms": {}}
    removed_modules = _fully_removed_modules(model, entries)
    dropped = set()
    for name in removed_modules:
        module = model.get_submodule(name)
        dropped.update(id(p) for p in module.parameters())
        if is_attention(module):
            new = RemovedAttention(getattr(module, "layer_idx", None), int(getattr(module, "head_dim", 1)))
            report["removed_modules"][name] = "attention"
        else:
            new = RemovedModule()
            report["removed_modules"][name] = "zeros"
        _set_module(model, name, new)

    # Norms whose weight loses channels: RMS statistics over fewer channels, compensated exactly.
    weight_owner = {
        id(m.weight): (n, m)
        for n, m in model.named_modules()
        if isinstance(getattr(m, "weight", None), nn.Parameter)
    }
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    for tid, (_, t, dims) in entries.items():
        if tid in dropped or tid not in weight_owner:
            continue
        mname, module = weight_owner[tid]
        if t.dim() == 1 and 0 in dims and is_rms_norm(module):
            d, d_new = t.shape[0], t.shape[0] - len(dims[0])
            if d_new == 0:  # an emptied attention: compress reports it
                continue
            eps_attr = norm_eps_attr(module)
            if eps_attr:
                setattr(module, eps_attr, getattr(module, eps_attr) * d / d_new)
            report["norms"][mname] = d / d_new
    embed_entry = entries.get(id(embed.weight)) if embed is not None else None
    if embed_entry is not None and 1 in embed_entry[2] and hasattr(embed, "embed_scale"):
        # Gemma scales embeddings by sqrt(hidden_size); a fresh load computes it from the new
        # size, so the new scale is that and the weights absorb the ratio (see compensate).
        d = embed.weight.shape[1]
        ratio = math.sqrt((d - len(embed_entry[2][1])) / d)
        if hasattr(embed, "scalar_embed_scale"):
            embed.scalar_embed_scale = embed.scalar_embed_scale * ratio
        if embed.embed_scale.device.type != "meta":
            embed.embed_scale.mul_(ratio)
        report["embed_scale_ratio"] = ratio

    edits: dict[int, tuple[torch.Tensor, TensorEdit]] = {}
    if compensate:
        for t, steps in _compensation(model, report):
            edits.setdefault(id(t), (t, TensorEdit()))[1].steps.extend(steps)
    for tid, (_, t, dims) in entries.items():
        if tid not in dropped:
            edits.setdefault(tid, (t, TensorEdit()))[1].keep = {
                d: torch.tensor([i for i in range(t.shape[d]) if i not in ix], dtype=torch.long)
                for d, ix in dims.items()
            }
    with torch.no_grad():
        for t, edit in edits.values():  # the steps first, on the whole tensors, then the cuts
            edit.apply_steps_(t)
        for t, edit in edits.values():
            t.data = edit.cut(t.data)  # in place: tied parameters stay tied
    fix_attributes(model)
    report["tensors"] = {name: edits[id(t)][1] for name, t in model.state_dict(keep_vars=True).items()
                         if id(t) in edits}
    return report


def _compensation(model: nn.Module, report: dict) -> list[tuple[torch.Tensor, list[tuple[str, float]]]]:
    """The in-place steps (method, operand) per tensor that make removal equal zeroing, in order (applied before the
    tensors are cut)."""
    steps = []
    for name, factor in report["norms"].items():
        module = model.get_submodule(name)
        steps.append((module.weight, _norm_scaling(module, math.sqrt(factor))))
    ratio = report.get("embed_scale_ratio")
    if ratio is not None:
        embed = model.get_input_embeddings()
        steps.append((embed.weight, [("div_", ratio)]))
        out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if out is not None and out.weight is embed.weight:
            # Tied: the lm_head now sees weights scaled by 1/ratio; the final norm undoes it.
            decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
            final_norm = getattr(decoder, "norm", None)
            if final_norm is None:
                raise ValueError("tied scaled embeddings need a final norm `norm` to compensate")
            steps.append((final_norm.weight, _norm_scaling(final_norm, ratio)))
    return steps


def _norm_scaling(module: nn.Module, factor: float) -> list[tuple[str, float]]:
    """The steps that multiply a norm's effective gain by `factor` (Gemma's norms use (1 + weight))."""
    if _one_plus_weight(module):
        return [("mul_", factor), ("add_", factor - 1.0)]
    return [("mul_", factor)]


def _one_plus_weight(module: nn.Module) -> bool:
    """Probe whether a norm computes x * (1 + w) rather than x * w (on a zeroed copy: works on the meta device)."""
    probe = copy.deepcopy(module).to_empty(device="cpu").float()
    with torch.no_grad():
        for p in probe.parameters():
            p.zero_()
        out = probe(torch.ones(1, probe.weight.shape[0]))
    return bool(out.abs().sum() > 0)


def fix_attributes(model: nn.Module) -> None:
    """Re-derive shape attributes of every module from its (possibly cut) parameters."""
    for module in model.modules():
        w = getattr(module, "weight", None)
        if isinstance(module, nn.Linear):
            module.out_features, module.in_features = w.shape
        elif hasattr(module, "nf") and hasattr(module, "nx") and w is not None:
            module.nx, module.nf = w.shape
        elif isinstance(module, nn.Embedding):
            module.embedding_dim = w.shape[1]
        elif isinstance(module, nn.LayerNorm) and w is not None:
            module.normalized_shape = (w.shape[0],)
        if hasattr(module, "base_layer") and hasattr(module, "in_features"):  # peft LoRA layer
            module.in_features, module.out_features = in_out_features(module)
        if is_attention(module):
            _fix_attention(module)


def head_counts(module: nn.Module) -> tuple[int, int]:
    """(query heads, key/value heads) of an attention module, from its projections' shapes."""
    hd = int(module.head_dim)
    out_proj = next(getattr(module, n) for n in OUTPUT_PROJECTIONS if hasattr(module, n))
    num_q = in_out_features(out_proj)[0] // hd
    if hasattr(module, "k_proj"):
        num_kv = in_out_features(module.k_proj)[1] // hd
    elif hasattr(module, "qkv_proj"):  # fused q | k | v
        num_kv = (in_out_features(module.qkv_proj)[1] - num_q * hd) // (2 * hd)
    else:  # fused q | k | v of equal sizes (gpt2's c_attn)
        num_kv = num_q
    return num_q, num_kv


def _fix_attention(module: nn.Module) -> None:
    """Head counts of an attention module, re-derived from its projections' shapes."""
    hd = int(module.head_dim)
    num_q, num_kv = head_counts(module)
    for attr, value in (
        ("num_heads", num_q),
        ("num_attention_heads", num_q),
        ("num_key_value_heads", num_kv),
        ("num_key_value_groups", num_q // max(num_kv, 1)),
        ("split_size", num_q * hd),
    ):
        if hasattr(module, attr):
            setattr(module, attr, value)
    config = getattr(module, "config", None)
    if config is not None and (
        getattr(config, "num_attention_heads", num_q) != num_q
        or getattr(config, "num_key_value_heads", num_kv) != num_kv
    ):
        # Some forwards read head counts from the config (phi3): give this layer its own copy.
        config = copy.copy(config)
        config.num_attention_heads = num_q
        if hasattr(config, "num_key_value_heads"):
            config.num_key_value_heads = num_kv
        module.config = config


def add_zero_bias(layer: nn.Linear) -> None:
    """Give a linear layer a zero output bias, as trainable as its weight."""
    w = layer.weight
    layer.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device), w.requires_grad)


def _pruned_class(stock_cls: type) -> type:
    """A subclass of the stock architecture that rebuilds itself to the recorded layout."""

    def __init__(self, config, *args, **kwargs):
        stock_cls.__init__(self, config, *args, **kwargs)
        stages = config.lorashear["removed"]  # successive compressions, in order
        # Added biases: {module: number of compressions before it was added}, so later stages cut it.
        biases = config.lorashear.get("biases", {})
        for i in range(len(stages) + 1):
            for name in (n for n, at in biases.items() if at == i):
                add_zero_bias(self.get_submodule(name))
            if i < len(stages):
                shrink(self, stages[i])

    return type(f"Lorashear{stock_cls.__name__}", (stock_cls,), {"__init__": __init__})


class LorashearForCausalLM(PreTrainedModel):
    """Loads a pruned folder: builds the original architecture, shrinks it, loads the weights."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        kwargs.pop("trust_remote_code", None)
        kwargs.pop("adapter_kwargs", None)
        stock_cls = AutoModelForCausalLM._model_mapping[type(config)]
        return _pruned_class(stock_cls).from_pretrained(
            pretrained_model_name_or_path, *model_args, config=config, **kwargs
        )
