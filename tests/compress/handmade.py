"""Groups of llama-like, phi3, gpt2 and opt models enumerated by hand from module names (tests only).

Stands in for `lorashear.graph.build_graph` where it is not available, and cross-checks it.
"""

from __future__ import annotations

from torch import nn

from lorashear.graph.structures import (
    ATTENTION_BLOCK,
    HIDDEN_CHANNEL,
    KV_GROUP,
    MLP_BLOCK,
    MLP_CHANNEL,
    QUERY_HEAD,
    Group,
    Slice,
)

READERS = {"q_proj", "k_proj", "v_proj", "qkv_proj", "c_attn", "gate_proj", "up_proj", "gate_up_proj", "fc1", "c_fc"}
WRITERS = {"o_proj", "out_proj", "down_proj", "fc2", "c_proj", "dense"}


def _linear(names: dict, module: nn.Module, rows=None, cols=None) -> list[Slice]:
    """Slices of a (possibly LoRA-wrapped) linear: output `rows` and/or input `cols`."""
    name = names[id(module)]
    peft = hasattr(module, "base_layer")
    base = module.base_layer if peft else module
    wname = f"{name}.base_layer" if peft else name
    conv = hasattr(base, "nf")
    out_dim, in_dim = (1, 0) if conv else (0, 1)
    out = []
    if rows is not None:
        rows = tuple(rows)
        out.append(Slice(f"{wname}.weight", out_dim, rows))
        if base.bias is not None:
            out.append(Slice(f"{wname}.bias", 0, rows))
        if peft:
            out += [Slice(f"{name}.lora_B.{a}.weight", 0, rows) for a in module.lora_B]
    if cols is not None:
        cols = tuple(cols)
        out.append(Slice(f"{wname}.weight", in_dim, cols))
        if peft:
            out += [Slice(f"{name}.lora_A.{a}.weight", 1, cols) for a in module.lora_A]
    return out


def _whole(names: dict, module: nn.Module) -> list[Slice]:
    prefix = names[id(module)]
    out = []
    for n, p in module.state_dict().items():
        dim = 1 if ".lora_A." in n else 0
        out.append(Slice(f"{prefix}.{n}", dim, tuple(range(p.shape[dim]))))
    return out


def _layers(model: nn.Module) -> list[nn.Module]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    dec = base.get_decoder()
    return list(getattr(dec, "layers", None) or getattr(dec, "h", None))


def hand_groups(model: nn.Module) -> list[Group]:
    """Every group of every kind (kv groups, query heads, MLP channels, blocks, hidden channels)."""
    names = {id(m): n for n, m in model.named_modules()}
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    c = base.config
    groups: list[Group] = []
    for i, layer in enumerate(_layers(model)):
        attn = getattr(layer, "self_attn", None) or layer.attn
        hd = int(attn.head_dim)
        nq = c.num_attention_heads
        nkv = getattr(c, "num_key_value_heads", None) or nq
        rep = nq // nkv
        o = next(getattr(attn, n) for n in ("o_proj", "out_proj", "c_proj", "dense") if hasattr(attn, n))

        def heads_slices(q_heads, kv_heads, attn=attn, hd=hd, nq=nq, nkv=nkv, o=o):
            qr = [h * hd + j for h in q_heads for j in range(hd)]
            kr = [h * hd + j for h in kv_heads for j in range(hd)]
            s = []
            if hasattr(attn, "q_proj"):
                s += _linear(names, attn.q_proj, rows=qr)
                if kr:
                    s += _linear(names, attn.k_proj, rows=kr) + _linear(names, attn.v_proj, rows=kr)
            elif hasattr(attn, "qkv_proj"):
                s += _linear(names, attn.qkv_proj, rows=qr + [nq * hd + r for r in kr] + [(nq + nkv) * hd + r for r in kr])
            else:  # gpt2 c_attn: q | k | v, no GQA
                s += _linear(names, attn.c_attn, rows=qr + [nq * hd + r for r in qr] + [2 * nq * hd + r for r in qr])
            for norm_name, rows in (("q_norm", qr), ("k_norm", kr)):
                norm = getattr(attn, norm_name, None)
                if norm is not None and norm.weight.shape[0] != hd and rows:  # olmo2 norms over all heads
                    s.append(Slice(f"{names[id(norm)]}.weight", 0, tuple(rows)))
            return s + _linear(names, o, cols=qr)

        for g in range(nkv):
            groups.append(Group(KV_GROUP, i, heads_slices(range(g * rep, (g + 1) * rep), [g])))
        if rep > 1:
            for j in range(rep):
                groups.append(Group(QUERY_HEAD, i, heads_slices([g * rep + j for g in range(nkv)], [])))
        groups.append(Group(ATTENTION_BLOCK, i, _whole(names, attn)))

        mlp = getattr(layer, "mlp", None)
        if mlp is None:  # opt: fc1/fc2 directly in the layer
            inputs, down = [layer.fc1], layer.fc2
            block = _whole(names, layer.fc1) + _whole(names, layer.fc2)
        else:
            inputs = [getattr(mlp, n) for n in ("gate_proj", "up_proj", "c_fc") if hasattr(mlp, n)]
            down = next(getattr(mlp, n) for n in ("down_proj", "c_proj", "fc2") if hasattr(mlp, n))
            block = _whole(names, mlp)
        fused = getattr(mlp, "gate_up_proj", None) if mlp is not None else None
        inter = (fused.base_layer if hasattr(fused, "base_layer") else fused).weight.shape[0] // 2 if fused is not None else None
        if inter is None:
            b0 = inputs[0].base_layer if hasattr(inputs[0], "base_layer") else inputs[0]
            inter = b0.weight.shape[1] if hasattr(b0, "nf") else b0.weight.shape[0]
        for ch in range(inter):
            s = _linear(names, fused, rows=[ch, inter + ch]) if fused is not None else []
            for m in inputs:
                s += _linear(names, m, rows=[ch])
            groups.append(Group(MLP_CHANNEL, i, s + _linear(names, down, cols=[ch])))
        groups.append(Group(MLP_BLOCK, i, block))

    # Hidden channels: embeddings, norms of the residual stream, readers' columns, writers' rows.
    d = c.hidden_size
    per_channel: dict[int, list[Slice]] = {ch: [] for ch in range(d)}
    for name, module in model.named_modules():
        leaf = name.rpartition(".")[2]
        if isinstance(module, nn.Embedding) and module.weight.shape[1] == d:
            for ch in range(d):
                per_channel[ch].append(Slice(f"{name}.weight", 1, (ch,)))
        elif "Norm" in type(module).__name__ and leaf not in ("q_norm", "k_norm"):
            for pn, p in module.named_parameters(recurse=False):
                if p.shape == (d,):
                    for ch in range(d):
                        per_channel[ch].append(Slice(f"{name}.{pn}", 0, (ch,)))
        elif leaf in READERS or leaf in WRITERS or leaf == "lm_head":
            if ".lora_" in name or name.endswith("base_layer"):
                continue
            if leaf == "c_proj" and ".mlp" not in name and ".attn" not in name:
                continue
            for ch in range(d):
                if leaf in WRITERS:
                    per_channel[ch] += _linear(names, module, rows=[ch])
                else:
                    per_channel[ch] += _linear(names, module, cols=[ch])
    groups += [Group(HIDDEN_CHANNEL, None, s) for s in per_channel.values()]
    return groups
