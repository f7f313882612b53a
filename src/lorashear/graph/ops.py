"""Operator semantics: how each ATen operator relates the channels of its inputs and output.

Every handler takes the propagation context and a node, relates atoms through
`ctx.table` (union / product) and returns the output's atoms: a list with one atom array per
dim (or a tuple of such lists for multi-output operators). Unknown operators are an error,
raised by the caller, so a new architecture fails loudly rather than silently mis-grouped.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.fx import Node

if TYPE_CHECKING:
    from lorashear.graph.propagate import Propagation

aten = torch.ops.aten
Atoms = list[np.ndarray]


def shape_of(node: Node) -> tuple[int, ...]:
    val = node.meta.get("val")
    return tuple(int(s) for s in val.shape)


def _dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


def _arg(node: Node, index: int, name: str, default=None):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


# --- shape-preserving -------------------------------------------------------------------


def unary(ctx: Propagation, node: Node) -> Atoms:
    """Elementwise on one tensor (activations, casts, dropout in eval, softmax): channels pass through."""
    return ctx.get(node.args[0])


def broadcast(ctx: Propagation, node: Node) -> Atoms:
    """Elementwise with broadcasting: aligned dims of equal size are the same channels."""
    out_shape = shape_of(node)
    tensors = [a for a in node.args if isinstance(a, Node)]
    return ctx.broadcast_union([(ctx.get(t), shape_of(t)) for t in tensors], out_shape)


def no_output(ctx: Propagation, node: Node) -> None:
    """Assertions and metadata checks: no tensor comes out."""
    return None


# --- stems: linear maps and embeddings -----------------------------------------------------


def linear(ctx: Propagation, node: Node) -> Atoms:
    """y = x W^T + b: x's last dim reads W's columns; y's last dim is W's rows (and b)."""
    x, weight = node.args[0], node.args[1]
    bias = _arg(node, 2, "bias")
    xs, ws = ctx.get(x), ctx.get(weight)
    ctx.table.union(xs[-1], ws[1])
    if isinstance(bias, Node):
        ctx.table.union(ws[0], ctx.get(bias)[-1])
    ctx.note_stem(node, x, weight, bias, ws[1], ws[0])
    return xs[:-1] + [ws[0]]


def addmm(ctx: Propagation, node: Node) -> Atoms:
    """y = b + x @ W (GPT-2's Conv1D, weight [in, out])."""
    bias, x, weight = node.args[0], node.args[1], node.args[2]
    xs, ws = ctx.get(x), ctx.get(weight)
    ctx.table.union(xs[1], ws[0])
    bs = ctx.get(bias)
    if shape_of(bias)[-1] == len(ws[1]):
        ctx.table.union(ws[1], bs[-1])
    ctx.note_stem(node, x, weight, bias, ws[0], ws[1])
    return [xs[0], ws[1]]


def matmul(ctx: Propagation, node: Node) -> Atoms:
    """Batched matmul: batch dims broadcast, a's last dim contracts with b's second to last."""
    a, b = node.args[0], node.args[1]
    sa, sb = shape_of(a), shape_of(b)
    xa, xb = ctx.get(a), ctx.get(b)
    if len(sa) == 1 or len(sb) == 1:
        ctx.table.union(xa[-1], xb[0] if len(sb) == 1 else xb[-2])
        if len(sb) == 1:
            return xa[:-1]
        return xb[:-2] + [xb[-1]]
    ctx.table.union(xa[-1], xb[-2])
    out_shape = shape_of(node)
    batch = ctx.broadcast_union([(xa[:-2], sa[:-2]), (xb[:-2], sb[:-2])], out_shape[:-2])
    if ctx.param_name(_through_layout(b)) is not None:
        ctx.note_stem(node, a, _through_layout(b), None, xb[-2], xb[-1])
    return batch + [xa[-2], xb[-1]]


def _through_layout(node: Node) -> Node:
    """The tensor under transposes (a matmul with W^T still reads W)."""
    while node.op == "call_function" and node.target in (aten.t.default, aten.transpose.int, aten.permute.default):
        node = node.args[0]
    return node


def embedding(ctx: Propagation, node: Node) -> Atoms:
    """Rows of W are looked up by token id (no channel relation); its columns are the hidden channels."""
    weight, indices = node.args[0], node.args[1]
    ws = ctx.get(weight)
    ctx.embedding_columns.append(ws[1])
    ctx.lookup_rows.append(ws[0])
    return ctx.get(indices) + [ws[1]]


def norm(ctx: Propagation, node: Node) -> Atoms:
    """layer_norm / rms_norm: the weight (and bias) are elementwise over the normalized dims."""
    x, normalized = node.args[0], node.args[1]
    xs = ctx.get(x)
    k = len(normalized)
    kind = "rmsnorm" if node.target == aten.rms_norm.default else "layernorm"
    for index, name in ((2, "weight"), (3, "bias")):
        param = _arg(node, index, name)
        if isinstance(param, Node):
            for d, atoms in zip(xs[-k:], ctx.get(param), strict=True):
                ctx.table.union(d, atoms)
            ctx.note_norm(param, kind)
    return xs


def native_layer_norm(ctx: Propagation, node: Node) -> tuple:
    out = norm(ctx, node)
    stats = [ctx.fresh(s) for s in node.meta["val"][1:]]
    return (out, *stats)


# --- layout -------------------------------------------------------------------------------


def reshape(ctx: Propagation, node: Node) -> Atoms:
    """view/reshape: group dims into chunks of equal element count; split/merge chunks are products.

    A size-1 dim next to a chunk joins it as its outer factor: it may be a layer's single KV head
    ([d] -> [1, d] on k_proj's output, [1, n_rep] -> [n_rep] in repeat_kv). The atom table keeps
    such a factor only where a repeat multiplies it (`AtomTable.resolve_units`).
    """
    src, in_shape, out_shape = ctx.get(node.args[0]), shape_of(node.args[0]), shape_of(node)
    out: Atoms = []
    units_in: Atoms = []  # size-1 input dims waiting for the next chunk
    units_out = 0  # size-1 output dims waiting for the next chunk
    i = j = 0
    while i < len(in_shape) or j < len(out_shape):
        if i < len(in_shape) and in_shape[i] == 1 and (j >= len(out_shape) or out_shape[j] != 1):
            units_in.append(src[i])
            i += 1
            continue
        if j < len(out_shape) and out_shape[j] == 1 and (i >= len(in_shape) or in_shape[i] != 1):
            units_out += 1
            j += 1
            continue
        ins, outs = [i], [j]
        n_in, n_out = in_shape[i], out_shape[j]
        i, j = i + 1, j + 1
        while n_in != n_out:
            if n_in < n_out:
                ins.append(i)
                n_in *= in_shape[i]
                i += 1
            else:
                outs.append(j)
                n_out *= out_shape[j]
                j += 1
        inputs = units_in + [src[k] for k in ins]
        out.extend(_reshape_chunk(ctx, inputs, [1] * units_out + [out_shape[k] for k in outs]))
        units_in, units_out = [], 0
    out.extend(ctx.table.new(1) for _ in range(units_out))  # trailing size-1 dims carry nothing
    return out


def _reshape_chunk(ctx: Propagation, inputs: Atoms, out_sizes: list[int]) -> Atoms:
    """Output atoms of one chunk: the input itself, or fresh dims tied to it as factors of products."""
    if len(inputs) == 1 and len(out_sizes) == 1:  # one dim to one dim: the same channels
        return inputs
    outs = [ctx.table.new(n) for n in out_sizes]
    if len(inputs) == 1:
        flat = inputs[0]
    elif len(outs) == 1:
        flat = outs[0]
    else:
        flat = ctx.table.new(int(np.prod([len(a) for a in inputs])))
    if len(inputs) > 1:
        ctx.table.product(flat, inputs)
    if len(outs) > 1:
        ctx.table.product(flat, outs)
    return outs


def transpose(ctx: Propagation, node: Node) -> Atoms:
    xs = list(ctx.get(node.args[0]))
    d0, d1 = (_dim(int(d), len(xs)) for d in node.args[1:3])
    xs[d0], xs[d1] = xs[d1], xs[d0]
    return xs


def t(ctx: Propagation, node: Node) -> Atoms:
    return list(reversed(ctx.get(node.args[0])))


def permute(ctx: Propagation, node: Node) -> Atoms:
    xs = ctx.get(node.args[0])
    return [xs[_dim(int(d), len(xs))] for d in node.args[1]]


def unsqueeze(ctx: Propagation, node: Node) -> Atoms:
    xs = list(ctx.get(node.args[0]))
    xs.insert(_dim(int(node.args[1]), len(xs) + 1), ctx.table.new(1))
    return xs


def squeeze(ctx: Propagation, node: Node) -> Atoms:
    xs, in_shape = ctx.get(node.args[0]), shape_of(node.args[0])
    dims = _arg(node, 1, "dim")
    if dims is None:
        dims = [d for d, n in enumerate(in_shape) if n == 1]
    dims = {_dim(int(d), len(xs)) for d in (dims if isinstance(dims, (list, tuple)) else [dims])}
    return [a for d, a in enumerate(xs) if not (d in dims and in_shape[d] == 1)]


def expand(ctx: Propagation, node: Node) -> Atoms:
    """Size-1 dims expanded to n are copies (repeat_kv's n_rep): fresh atoms flagged broadcast."""
    xs, out_shape = ctx.get(node.args[0]), shape_of(node)
    lead = len(out_shape) - len(xs)
    out = [ctx.table.new(n, broadcast=True) for n in out_shape[:lead]]
    for a, n in zip(xs, out_shape[lead:], strict=True):
        out.append(ctx.table.new(n, broadcast=True) if len(a) != n else a)
    return out


def slice_(ctx: Propagation, node: Node) -> Atoms:
    xs = list(ctx.get(node.args[0]))
    d = _dim(int(_arg(node, 1, "dim", 0)), len(xs))
    start, end, step = _arg(node, 2, "start"), _arg(node, 3, "end"), _arg(node, 4, "step", 1)
    xs[d] = xs[d][slice(start, end, step)]
    return xs


def select(ctx: Propagation, node: Node) -> Atoms:
    xs = list(ctx.get(node.args[0]))
    del xs[_dim(int(node.args[1]), len(xs))]
    return xs


def split(ctx: Propagation, node: Node) -> tuple:
    """split / split_with_sizes / chunk: consecutive ranges of one dim (fused qkv, gate_up)."""
    xs = ctx.get(node.args[0])
    d = _dim(int(_arg(node, 2, "dim", 0)), len(xs))
    pieces, start = [], 0
    for val in node.meta["val"]:
        n = int(val.shape[d])
        part = list(xs)
        part[d] = xs[d][start : start + n]
        pieces.append(part)
        start += n
    return tuple(pieces)


def unbind(ctx: Propagation, node: Node) -> tuple:
    xs = ctx.get(node.args[0])
    d = _dim(int(_arg(node, 1, "dim", 0)), len(xs))
    return tuple(xs[:d] + xs[d + 1 :] for _ in node.meta["val"])


def cat(ctx: Propagation, node: Node) -> Atoms:
    """Concatenation: the cat dim is the concatenated channels; the other dims are shared."""
    tensors = [t for t in node.args[0] if shape_of(t) != (0,)]
    d = _dim(int(_arg(node, 1, "dim", 0)), len(shape_of(node)))
    parts = [ctx.get(t) for t in tensors]
    out = list(parts[0])
    for k in range(len(out)):
        if k == d:
            out[k] = np.concatenate([p[k] for p in parts])
        else:
            for p in parts[1:]:
                ctx.table.union(out[k], p[k])
    return out


def stack(ctx: Propagation, node: Node) -> Atoms:
    parts = [ctx.get(t) for t in node.args[0]]
    out = list(parts[0])
    for p in parts[1:]:
        for a, b in zip(out, p, strict=True):
            ctx.table.union(a, b)
    out.insert(_dim(int(_arg(node, 1, "dim", 0)), len(out) + 1), ctx.table.new(len(parts)))
    return out


def getitem(ctx: Propagation, node: Node) -> Atoms:
    return ctx.get(node.args[0])[node.args[1]]


def reduction(ctx: Propagation, node: Node) -> Atoms:
    """mean/sum/amax over dims: those dims disappear (or become fresh size-1 dims with keepdim)."""
    xs, out_shape = ctx.get(node.args[0]), shape_of(node)
    dims = _arg(node, 1, "dim")
    reduced = set(range(len(xs))) if dims in (None, []) else {
        _dim(int(d), len(xs)) for d in (dims if isinstance(dims, (list, tuple)) else [dims])
    }
    keep = len(out_shape) == len(xs)
    return [ctx.table.new(1) if d in reduced else a for d, a in enumerate(xs) if keep or d not in reduced]


# --- attention ------------------------------------------------------------------------------


def sdpa(ctx: Propagation, node: Node) -> Atoms:
    """softmax(q k^T) v over [..., heads, seq, dim]; GQA (enable_gqa) repeats KV heads n_rep times."""
    q, k, v = node.args[0], node.args[1], node.args[2]
    xq, xk, xv = ctx.get(q), ctx.get(k), ctx.get(v)
    ctx.table.union(xq[-1], xk[-1])  # q.k contracts over head_dim
    ctx.table.union(xk[-2], xv[-2])  # attn.v contracts over the key sequence
    ctx.table.union(xk[-3], xv[-3])
    hq, hk = len(xq[-3]), len(xk[-3])
    if hq == hk:
        ctx.table.union(xq[-3], xk[-3])
    else:  # query head h uses KV head h // n_rep
        ctx.table.product(xq[-3], [xk[-3], ctx.table.new(hq // hk, broadcast=True)])
    batch = ctx.broadcast_union([(xq[:-3], shape_of(q)[:-3]), (xk[:-3], shape_of(k)[:-3])], shape_of(q)[:-3])
    return batch + [xq[-3], xq[-2], xv[-1]]


Handler = Callable[["Propagation", Node], object]

UNARY_OPS = [
    aten.to.dtype, aten.to.dtype_layout, aten.to.device, aten.to.other, aten._to_copy.default,
    aten.clone.default, aten.contiguous.default, aten.alias.default, aten.detach.default,
    aten.lift_fresh_copy.default, aten.dropout.default, aten.feature_dropout.default,
    aten.neg.default, aten.silu.default, aten.gelu.default, aten.relu.default, aten.tanh.default,
    aten.sigmoid.default, aten.rsqrt.default, aten.sqrt.default, aten.exp.default, aten.log.default,
    aten.abs.default, aten.pow.Tensor_Scalar, aten.softmax.int, aten._softmax.default,
    aten.log_softmax.int, aten._log_softmax.default, aten.type_as.default, aten.clamp.default,
    aten.clamp_min.default, aten.clamp_max.default, aten.erf.default, aten.sin.default,
    aten.cos.default, aten.reciprocal.default, aten.square.default, aten.hardtanh.default,
    aten.leaky_relu.default, aten.elu.default, aten.softplus.default, aten.mish.default,
    aten.gelu_.default, aten.relu_.default, aten.silu_.default, aten.mul.Scalar, aten.add.Scalar,
    aten.div.Scalar, aten.sub.Scalar, aten.rsub.Scalar, aten.masked_fill.Scalar, aten.fill.Scalar,
    aten.zeros_like.default, aten.ones_like.default,
]
BROADCAST_OPS = [
    aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.div.Tensor_mode,
    aten.pow.Tensor_Tensor, aten.maximum.default, aten.minimum.default, aten.where.self,
    aten.masked_fill.Tensor, aten.rsub.Tensor, aten.eq.Tensor, aten.ne.Tensor, aten.lt.Tensor,
    aten.gt.Tensor, aten.le.Tensor, aten.ge.Tensor, aten.lerp.Scalar, aten.lerp.Tensor,
]
OPS: dict[object, Handler] = {op: unary for op in UNARY_OPS}
OPS.update({op: broadcast for op in BROADCAST_OPS})
OPS.update({
    aten._assert_tensor_metadata.default: no_output,
    aten.linear.default: linear,
    aten.addmm.default: addmm,
    aten.mm.default: matmul,
    aten.bmm.default: matmul,
    aten.matmul.default: matmul,
    aten.embedding.default: embedding,
    aten.layer_norm.default: norm,
    aten.rms_norm.default: norm,
    aten.native_layer_norm.default: native_layer_norm,
    aten.view.default: reshape,
    aten.reshape.default: reshape,
    aten._unsafe_view.default: reshape,
    aten.flatten.using_ints: reshape,
    aten.unflatten.int: reshape,
    aten.transpose.int: transpose,
    aten.t.default: t,
    aten.permute.default: permute,
    aten.unsqueeze.default: unsqueeze,
    aten.squeeze.dim: squeeze,
    aten.squeeze.dims: squeeze,
    aten.squeeze.default: squeeze,
    aten.expand.default: expand,
    aten.slice.Tensor: slice_,
    aten.select.int: select,
    aten.split.Tensor: split,
    aten.split_with_sizes.default: split,
    aten.chunk.default: split,
    aten.unbind.int: unbind,
    aten.cat.default: cat,
    aten.stack.default: stack,
    aten.mean.dim: reduction,
    aten.sum.dim_IntList: reduction,
    aten.amax.default: reduction,
    aten.var.correction: reduction,
    aten.mean.default: reduction,
    aten.sum.default: reduction,
    aten.scaled_dot_product_attention.default: sdpa,
    operator.getitem: getitem,
})

# Ops that pass a tensor along unchanged in value up to a scale: a stem reading through only
# these from another stem's output is a low-rank factorization (LoRA's A then B).
LINEAR_PASS_OPS = {
    aten.to.dtype, aten.to.dtype_layout, aten._to_copy.default, aten.clone.default,
    aten.contiguous.default, aten.alias.default, aten.dropout.default, aten.mul.Tensor,
    aten.mul.Scalar, aten.div.Tensor, aten.div.Scalar,
}
STEM_OPS = {aten.linear.default, aten.addmm.default, aten.mm.default, aten.matmul.default}
