"""What a llama.cpp GGUF needs to know about a (pruned) HF model: architecture and per-layer sizes.

Layers alike → the model's own GGUF architecture where llama.cpp's loader can express it; layers that
differ (or lost a whole block) → `deci`, llama.cpp's LLaMA with per-layer head counts and MLP widths.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lorashear.errors import LorashearError
from lorashear.pruned.modeling_lorashear import (
    RemovedAttention,
    RemovedModule,
    head_counts,
    norm_eps_attr,
)

# HF model_type -> its own GGUF architecture. Both use HF's rotate-half RoPE, which `deci` (llama.cpp's
# "normal" RoPE on adjacent pairs) reproduces once Q/K rows are permuted, so both also export as `deci`.
OWN_ARCH = {"llama": "llama", "qwen2": "qwen2"}
# GGUF architectures whose RoPE pairs adjacent values (Q/K rows permuted on export); qwen2 uses NeoX RoPE.
ADJACENT_ROPE = {"llama", "deci"}
NON_UNIFORM_ARCH = "deci"
# MLP widths llama.cpp's matrix kernels run fast: a multiple of this. On the default model at 20%, widths
# like 1,017 made f16 prefill 0.77x dense, widths rounded to 64 1.22x (docs/results.md, llama.cpp speed).
FAST_WIDTH = 64


@dataclass(frozen=True)
class LayerShape:
    """One decoder layer as llama.cpp sees it: 0 heads = attention-free, 0 channels = no MLP."""

    heads: int
    kv_heads: int
    mlp: int


@dataclass(frozen=True)
class GGUFLayout:
    """The GGUF architecture and hyper-parameters of a model."""

    arch: str
    layers: tuple[LayerShape, ...]
    hidden: int
    head_dim: int
    vocab: int
    context: int
    rms_eps: float
    rope_theta: float
    rope_factors: torch.Tensor | None  # llama.cpp's rope_freqs: default frequency / the model's, or None

    @property
    def uniform(self) -> bool:
        return self.arch != NON_UNIFORM_ARCH

    @property
    def permute_qk(self) -> bool:
        return self.arch in ADJACENT_ROPE

    def slow_widths(self) -> dict[int, int]:
        """Layer index -> MLP width, for every layer whose MLP width is not a multiple of `FAST_WIDTH` (a layer
        without MLP is not listed): what `prune --multiple-of 64` would have rounded."""
        return {i: s.mlp for i, s in enumerate(self.layers) if s.mlp % FAST_WIDTH}


def layer_shape(layer: nn.Module) -> LayerShape:
    """Head counts and MLP width of one decoder layer (removed blocks count as 0)."""
    attn, mlp = layer.self_attn, layer.mlp
    heads, kv = (0, 0) if isinstance(attn, RemovedAttention) else head_counts(attn)
    width = 0 if isinstance(mlp, RemovedModule) else mlp.gate_proj.weight.shape[0]
    return LayerShape(heads, kv, width)


def output_biases(model: nn.Module) -> bool:
    """Whether any attention output or MLP projection has a bias (FLAP's compensation, llama's mlp_bias)."""
    names = ("o_proj", "gate_proj", "up_proj", "down_proj")
    return any(getattr(m, "bias", None) is not None for n, m in model.named_modules() if n.rpartition(".")[2] in names)


def choose_arch(model_type: str, layers: list[LayerShape], hidden: int, head_dim: int, biases: bool) -> str:
    """The model's own GGUF architecture when every layer is alike and its loader takes the sizes, else deci."""
    first = layers[0]
    alike = all(s == first for s in layers) and first.heads > 0 and first.mlp > 0
    # llama.cpp's qwen2 loader assumes query width == hidden size (no head removed, no hidden channel removed)
    # and has no output or MLP biases; deci has both.
    fits = model_type != "qwen2" or (first.heads * head_dim == hidden and not biases)
    return OWN_ARCH[model_type] if alike and fits else NON_UNIFORM_ARCH


def rms_eps(model: nn.Module) -> float:
    """The one eps every live RMSNorm uses (llama.cpp has a single one); pruning hidden channels scales all alike."""
    eps = {getattr(m, a) for m in model.modules() if "RMSNorm" in type(m).__name__ and (a := norm_eps_attr(m))}
    if len(eps) != 1:
        raise LorashearError(f"the model's RMSNorms use different eps values {sorted(eps)}; llama.cpp takes one")
    return eps.pop()


def rope_factors(model: nn.Module, theta: float, head_dim: int) -> torch.Tensor | None:
    """llama.cpp's per-frequency divisors (rope_freqs) that turn plain RoPE into the model's (llama3, linear, ...)."""
    rotary = model.model.rotary_emb
    if float(getattr(rotary, "attention_scaling", 1.0)) != 1.0:
        raise LorashearError("this model's RoPE scales attention (YaRN-like); GGUF export supports plain, "
                             "linear and llama3 RoPE")
    plain = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    factors = plain / rotary.inv_freq.double().cpu()
    return None if torch.allclose(factors, torch.ones_like(factors)) else factors.float()


def read_layout(model: nn.Module) -> GGUFLayout:
    """The GGUF layout of a loaded HF model (LoRA merged); LorashearError for what llama.cpp cannot run."""
    config = model.config
    if config.model_type not in OWN_ARCH:
        raise LorashearError(
            f"GGUF export supports the llama and qwen2 architectures (uniform or not); this model is "
            f"'{config.model_type}'"
        )
    if getattr(config, "use_sliding_window", False):
        raise LorashearError("this model uses sliding-window attention, which GGUF export does not write")
    layers = [layer_shape(layer) for layer in model.model.layers]
    if all(s.heads == 0 for s in layers):
        raise LorashearError("no layer has attention heads left; llama.cpp needs at least one to set the head size")
    hidden = model.get_input_embeddings().weight.shape[1]
    head_dim = int(next(m.head_dim for m in model.modules() if hasattr(m, "head_dim") and hasattr(m, "o_proj")))
    rope = getattr(config, "rope_parameters", None) or {}
    theta = float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    return GGUFLayout(
        arch=choose_arch(config.model_type, layers, hidden, head_dim, output_biases(model)),
        layers=tuple(layers),
        hidden=hidden,
        head_dim=head_dim,
        vocab=model.get_input_embeddings().weight.shape[0],
        context=int(config.max_position_embeddings),
        rms_eps=rms_eps(model),
        rope_theta=theta,
        rope_factors=rope_factors(model, theta, head_dim),
    )
