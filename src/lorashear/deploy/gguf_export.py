"""`export_gguf`: a (pruned) HF folder as one llama.cpp GGUF file, optionally quantized by llama.cpp itself.

Tensor names and metadata keys come from the `gguf` package's constants. Q/K rows are permuted per
head for architectures whose RoPE rotates adjacent pairs (HF rotates the two halves of a head). In
`deci` files a layer whose MLP is gone gets a 1-wide zero MLP, because llama.cpp skips the rest of a
layer with `n_ff == 0` (its attention output would be lost); a layer without heads is attention-free,
except layer 0, which llama.cpp reads the head size from: it gets one zero head.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import torch
from torch import nn

from lorashear.deploy.gguf_layout import GGUFLayout, LayerShape, read_layout
from lorashear.deploy.gguf_run import require_llama_cpp
from lorashear.deploy.gguf_vocab import add_tokenizer
from lorashear.errors import LorashearError
from lorashear.models import load_model, load_tokenizer

T = gguf.MODEL_TENSOR
DTYPES = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
}
# llama.cpp quantization types that need no importance matrix (--quant) -> its file type.
QUANTS = {
    name.lower(): gguf.LlamaFileType[f"MOSTLY_{name}"]
    for name in ("Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_0", "Q3_K_M", "Q2_K")
}


def tensor_name(kind: gguf.MODEL_TENSOR, layer: int | None = None, suffix: str = "weight") -> str:
    return f"{gguf.TENSOR_NAMES[kind].format(bid=layer)}.{suffix}"


def rope_pairs_adjacent(rows: torch.Tensor, heads: int) -> torch.Tensor:
    """Reorder each head's rows from HF's (first half, second half) RoPE pairing to adjacent pairs."""
    head_dim = rows.shape[0] // heads
    return rows.reshape(heads, 2, head_dim // 2, *rows.shape[1:]).transpose(1, 2).reshape(rows.shape)


def linear_tensors(kind: gguf.MODEL_TENSOR, layer: int, module: nn.Linear, heads: int = 0) -> Iterator:
    """(name, tensor) of a linear layer's weight and bias; `heads` > 0 permutes rows for adjacent-pair RoPE."""
    for suffix, t in (("weight", module.weight), ("bias", module.bias)):
        if t is not None:
            yield tensor_name(kind, layer, suffix), rope_pairs_adjacent(t, heads) if heads else t


def attention_tensors(i: int, layer: nn.Module, shape: LayerShape, permute: bool) -> Iterator:
    attn = layer.self_attn
    yield tensor_name(T.ATTN_NORM, i), layer.input_layernorm.weight
    yield from linear_tensors(T.ATTN_Q, i, attn.q_proj, shape.heads if permute else 0)
    yield from linear_tensors(T.ATTN_K, i, attn.k_proj, shape.kv_heads if permute else 0)
    yield from linear_tensors(T.ATTN_V, i, attn.v_proj)
    yield from linear_tensors(T.ATTN_OUT, i, attn.o_proj)


def zero_attention(i: int, hidden: int, head_dim: int) -> Iterator:
    """One query and one KV head of zeros: the layer's attention outputs exactly zero."""
    yield tensor_name(T.ATTN_NORM, i), torch.ones(hidden)
    for kind in (T.ATTN_Q, T.ATTN_K, T.ATTN_V):
        yield tensor_name(kind, i), torch.zeros(head_dim, hidden)
    yield tensor_name(T.ATTN_OUT, i), torch.zeros(hidden, head_dim)


def mlp_tensors(i: int, layer: nn.Module, hidden: int) -> Iterator:
    """The layer's MLP, or a 1-wide MLP of zeros where it was removed (its output is exactly zero)."""
    mlp = layer.mlp
    if not hasattr(mlp, "gate_proj"):
        yield tensor_name(T.FFN_NORM, i), torch.ones(hidden)
        yield tensor_name(T.FFN_GATE, i), torch.zeros(1, hidden)
        yield tensor_name(T.FFN_UP, i), torch.zeros(1, hidden)
        yield tensor_name(T.FFN_DOWN, i), torch.zeros(hidden, 1)
        return
    yield tensor_name(T.FFN_NORM, i), layer.post_attention_layernorm.weight
    yield from linear_tensors(T.FFN_GATE, i, mlp.gate_proj)
    yield from linear_tensors(T.FFN_UP, i, mlp.up_proj)
    yield from linear_tensors(T.FFN_DOWN, i, mlp.down_proj)


def written_shapes(layout: GGUFLayout) -> list[LayerShape]:
    """The per-layer sizes the file declares: removed MLPs as 1 channel, a headless layer 0 as one head."""
    shapes = []
    for i, s in enumerate(layout.layers):
        heads, kv = (1, 1) if i == 0 and s.heads == 0 else (s.heads, s.kv_heads)
        shapes.append(LayerShape(heads, kv, s.mlp or 1))
    return shapes


def model_tensors(model: nn.Module, layout: GGUFLayout) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of the GGUF file, in llama.cpp's names and (rows, columns) order."""
    yield tensor_name(T.TOKEN_EMBD), model.get_input_embeddings().weight
    if layout.rope_factors is not None:
        yield tensor_name(T.ROPE_FREQS), layout.rope_factors
    for i, (layer, shape) in enumerate(zip(model.model.layers, layout.layers, strict=True)):
        if shape.heads:
            yield from attention_tensors(i, layer, shape, layout.permute_qk)
        elif i == 0:
            yield from zero_attention(i, layout.hidden, layout.head_dim)
        yield from mlp_tensors(i, layer, layout.hidden)
    yield tensor_name(T.OUTPUT_NORM), model.model.norm.weight
    head = model.get_output_embeddings()
    if head.weight is not model.get_input_embeddings().weight:
        yield tensor_name(T.OUTPUT), head.weight


def encode(t: torch.Tensor, qtype: gguf.GGMLQuantizationType) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """A tensor's data for the file: vectors and 1-wide matrices stay f32 (as llama.cpp's converter keeps norms)."""
    data = t.detach().float().cpu().contiguous().numpy()
    if t.dim() < 2 or min(t.shape) == 1 or qtype == gguf.GGMLQuantizationType.F32:
        return data, gguf.GGMLQuantizationType.F32
    return gguf.quants.quantize(data, qtype), qtype


def add_hparams(writer: gguf.GGUFWriter, layout: GGUFLayout, name: str, file_type: int) -> None:
    """Architecture metadata: uniform sizes as scalars, `deci` sizes as per-layer arrays."""
    shapes = written_shapes(layout)
    writer.add_name(name)
    writer.add_file_type(file_type)
    writer.add_context_length(layout.context)
    writer.add_embedding_length(layout.hidden)
    writer.add_block_count(len(shapes))
    writer.add_vocab_size(layout.vocab)
    if layout.uniform:
        writer.add_feed_forward_length(shapes[0].mlp)
        writer.add_head_count(shapes[0].heads)
        writer.add_head_count_kv(shapes[0].kv_heads)
    else:
        writer.add_feed_forward_length([s.mlp for s in shapes])
        writer.add_head_count([s.heads for s in shapes])
        writer.add_head_count_kv([s.kv_heads for s in shapes])
    writer.add_key_length(layout.head_dim)
    writer.add_value_length(layout.head_dim)
    writer.add_rope_dimension_count(layout.head_dim)
    writer.add_rope_freq_base(layout.rope_theta)
    writer.add_layer_norm_rms_eps(layout.rms_eps)


def write_gguf(model: nn.Module, tokenizer, path: Path, dtype: str, name: str) -> GGUFLayout:
    """Write `model` (HF, LoRA merged) and its tokenizer to `path` with 2-D weights in `dtype`."""
    layout = read_layout(model)
    qtype, file_type = DTYPES[dtype]
    writer = gguf.GGUFWriter(path, layout.arch)
    try:
        add_hparams(writer, layout, name, int(file_type))
        add_tokenizer(writer, tokenizer, layout.vocab)
        with torch.no_grad():
            for tname, t in model_tensors(model, layout):
                data, raw = encode(t, qtype)
                writer.add_tensor(tname, data, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return layout


def quantize(src: Path, dst: Path, quant: str) -> None:
    """llama.cpp's own quantizer (through llama-cpp-python) from `src` to `dst`."""
    llama_cpp = require_llama_cpp("--quant")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(QUANTS[quant])
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) != 0:
        raise LorashearError(f"llama.cpp could not quantize to {quant} (its log above says why)")


def export_gguf(model: str, out: str | Path, dtype: str = "f16", quant: str | None = None) -> GGUFLayout:
    """Write MODEL (any model argument: a pruned folder, uniform or not, a dense model, an adapter) to one
    GGUF file `out` for llama.cpp; `quant` quantizes it with llama.cpp (from a `dtype` file)."""
    if dtype not in DTYPES:
        raise LorashearError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if quant is not None and quant not in QUANTS:
        raise LorashearError(f"unknown quantization {quant!r}; choose from {', '.join(QUANTS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    hf = load_model(model, device="cpu")
    if hasattr(hf, "merge_and_unload"):  # an adapter folder: merge its LoRA
        hf = hf.merge_and_unload()
    tokenizer = load_tokenizer(model)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        written = Path(tmp) / "model.gguf"
        layout = write_gguf(hf, tokenizer, written, dtype, Path(model).name)
        if quant is not None:
            quantized = Path(tmp) / "quantized.gguf"
            quantize(written, quantized, quant)
            written = quantized
        os.replace(written, out)
    return layout
