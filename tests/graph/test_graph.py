"""Discovered groups: counts per architecture, structure, and a zeroing oracle."""

from __future__ import annotations

import copy
import dataclasses
import random
from functools import cache

import pytest
import torch
from tiny_models import (
    ARCHS,
    HEAD_DIM,
    HEADS,
    HIDDEN,
    KV_HEADS,
    LAYERS,
    MHA_ARCHS,
    MLP,
    VARIANTS,
    model_and_graph,
    tiny_model,
)

from lorashear.compress import compress, zero_groups
from lorashear.errors import LorashearError
from lorashear.graph import (
    ATTENTION_BLOCK,
    GROUP_KINDS,
    HIDDEN_CHANNEL,
    KV_GROUP,
    MLP_BLOCK,
    MLP_CHANNEL,
    QUERY_HEAD,
    Group,
    StructureGraph,
    build_graph,
    groups_from_json,
    groups_to_json,
)

# The oracle's variants (traces shared through model_and_graph's cache) and two without LoRA.
CASES = [(a, VARIANTS[a][2]) for a in ARCHS] + [("llama", False), ("gpt2", False)]


def expected_counts(model_type: str) -> dict[str, int]:
    kv = HEADS if model_type in MHA_ARCHS else KV_HEADS
    n_rep = HEADS // kv
    return {
        ATTENTION_BLOCK: LAYERS,
        MLP_BLOCK: LAYERS,
        KV_GROUP: LAYERS * kv,
        QUERY_HEAD: LAYERS * n_rep if n_rep > 1 else 0,
        MLP_CHANNEL: LAYERS * MLP,
        HIDDEN_CHANNEL: HIDDEN,
    }


@pytest.mark.parametrize("model_type,lora", CASES)
def test_counts_match_config(model_type, lora):
    _, graph = model_and_graph(model_type, lora)
    counts = {kind: len(graph.of_kind(kind)) for kind in expected_counts(model_type)}
    assert counts == expected_counts(model_type)
    assert all(g.prunable for g in graph.groups)
    layers = sorted({g.layer for g in graph.of_kind(KV_GROUP)})
    assert layers == list(range(LAYERS))


@pytest.mark.parametrize("model_type,lora", CASES)
def test_lora_rank_never_sliced(model_type, lora):
    _, graph = model_and_graph(model_type, lora)
    for group in graph.groups:
        for s in group.slices:
            assert not ("lora_A" in s.param and s.dim == 0), (group.kind, s)
            assert not ("lora_B" in s.param and s.dim == 1), (group.kind, s)
    names = {s.param for g in graph.groups for s in g.slices}
    assert any("lora_" in n for n in names) == lora


def _rows(group: Group, needle: str, dim: int) -> tuple[int, ...]:
    found = [s.index for s in group.slices if needle in s.param and s.dim == dim]
    assert len(found) == 1, (needle, dim, group.slices)
    return found[0]


def test_llama_kv_group_structure_with_lora():
    _, graph = model_and_graph("llama", True)
    n_rep = HEADS // KV_HEADS
    for group in graph.of_kind(KV_GROUP):
        k_rows = _rows(group, "k_proj.base_layer", 0)
        kv = k_rows[0] // HEAD_DIM
        assert k_rows == tuple(range(kv * HEAD_DIM, (kv + 1) * HEAD_DIM))
        q_rows = tuple(range(kv * n_rep * HEAD_DIM, (kv + 1) * n_rep * HEAD_DIM))
        assert _rows(group, "q_proj.base_layer", 0) == q_rows
        assert _rows(group, "q_proj.lora_B", 0) == q_rows
        assert _rows(group, "v_proj.base_layer", 0) == k_rows == _rows(group, "v_proj.lora_B", 0)
        assert _rows(group, "o_proj.base_layer", 1) == q_rows == _rows(group, "o_proj.lora_A", 1)
        assert len(group.slices) == 8
        assert group.meta["inputs"] == [[s.param, s.dim] for s in group.slices if "o_proj" in s.param]


def test_query_head_takes_ith_head_of_every_kv_group():
    _, graph = model_and_graph("llama")
    n_rep = HEADS // KV_HEADS
    for group in graph.of_kind(QUERY_HEAD):
        q_rows = _rows(group, "q_proj", 0)
        heads = sorted({r // HEAD_DIM for r in q_rows})
        assert len(heads) == KV_HEADS and len({h % n_rep for h in heads}) == 1
        assert {s.param.split(".")[-2] for s in group.slices} == {"q_proj", "o_proj"}


def test_fused_projections_take_row_slices():
    _, graph = model_and_graph("phi3", True)
    group = graph.of_kind(KV_GROUP)[1]
    rows = _rows(group, "qkv_proj.base_layer", 0)
    assert _rows(group, "qkv_proj.lora_B", 0) == rows
    q = HEADS * HEAD_DIM
    assert rows == tuple(range(32, 64)) + tuple(range(q + 16, q + 32)) + tuple(range(q + 48, q + 64))
    channel = graph.of_kind(MLP_CHANNEL)[5]
    assert _rows(channel, "gate_up_proj.base_layer", 0) == (5, MLP + 5)


def test_gpt2_conv1d_head_is_three_column_ranges():
    _, graph = model_and_graph("gpt2")
    group = graph.of_kind(KV_GROUP)[1]
    cols = _rows(group, "c_attn.weight", 1)
    assert cols == tuple(range(16, 32)) + tuple(range(HIDDEN + 16, HIDDEN + 32)) + tuple(range(2 * HIDDEN + 16, 2 * HIDDEN + 32))
    assert _rows(group, "c_attn.bias", 0) == cols
    assert _rows(group, "attn.c_proj.weight", 0) == tuple(range(16, 32))


@pytest.mark.parametrize("model_type,tied_name", [("gemma", "embed_tokens"), ("gpt2", "wte"), ("mistral", None)])
def test_embeddings_appear_once(model_type, tied_name):
    model, graph = model_and_graph(model_type)
    channel = graph.of_kind(HIDDEN_CHANNEL)[3]
    params = [s.param for s in channel.slices]
    assert len(params) == len(set(params))
    if tied_name:
        assert any(tied_name in p for p in params) and not any("lm_head" in p for p in params)
    else:
        assert any("lm_head" in p for p in params) and any("embed_tokens" in p for p in params)
    assert all(s.index == (3,) for s in channel.slices)


def test_norm_types_in_meta():
    _, llama = model_and_graph("llama")
    _, opt = model_and_graph("opt")
    assert set(llama.of_kind(HIDDEN_CHANNEL)[0].meta["norm_types"].values()) == {"rmsnorm"}
    assert len(llama.of_kind(HIDDEN_CHANNEL)[0].meta["norm_types"]) == 2 * LAYERS + 1
    assert set(opt.of_kind(HIDDEN_CHANNEL)[0].meta["norm_types"].values()) == {"layernorm"}
    _, olmo2 = model_and_graph("olmo2", True)  # q_norm over the whole projection: its elements join the heads
    assert any("q_norm" in s.param for s in olmo2.of_kind(KV_GROUP)[0].slices)


def test_save_and_load_roundtrip(tmp_path):
    _, graph = model_and_graph("qwen2", True)
    graph.save(tmp_path / "g.json")
    import json

    again = StructureGraph.from_dict(json.loads((tmp_path / "g.json").read_text()))
    assert again.to_dict() == graph.to_dict()


def test_groups_json_is_compact_exact_and_reads_the_older_form():
    """pruning.json writes groups with `groups_to_json`: consecutive groups alike but for their
    indices share one record; reading gives back every group (slices, verdict, meta) in its order, whatever the
    order; one dict per group (files written before) still reads."""
    import json

    _, graph = model_and_graph("qwen2", True)  # every kind, LoRA slices, meta, per-slice indices that differ
    groups = [*graph.groups]
    groups[0] = dataclasses.replace(groups[0], unprunable="first layer")  # a verdict ends a run
    for order in (groups, random.Random(0).sample(groups, len(groups))):
        records = json.loads(json.dumps(groups_to_json(order)))
        assert groups_from_json(records) == order
    assert len(groups_to_json(groups)) < len(groups) // 4  # runs of alike groups (the MLP channels of a layer)
    channels = graph.of_kind(MLP_CHANNEL)[:3]
    record = groups_to_json(channels)
    assert len(record) == 1 and record[0]["indices"] == [list(g.slices[0].index) for g in channels]
    kv = graph.of_kind(KV_GROUP)[0]  # its q/k/v/o slices take different indices: one list per slice
    assert groups_to_json([kv])[0]["indices"] == [[list(s.index) for s in kv.slices]]
    older = [g.to_dict() for g in groups]
    assert groups_from_json(older) == groups
    assert groups_from_json([*older[:2], *groups_to_json(groups[2:])]) == groups


def test_unknown_operator_is_a_clear_error(monkeypatch):
    from lorashear.graph import ops

    monkeypatch.delitem(ops.OPS, torch.ops.aten.silu.default)
    with pytest.raises(LorashearError, match="aten.silu"):
        build_graph(tiny_model("llama"))


# --- zeroing oracle ----------------------------------------------------------------------


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def _edit(model, slices, fill):
    """Zero the slices (fill=0) or overwrite them with seeded random values (fill=1)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for s in slices:
            p = model.get_parameter(s.param)
            index = torch.tensor(s.index)
            if fill == 0:
                p.index_fill_(s.dim, index, 0.0)
            else:
                shape = p.index_select(s.dim, index).shape
                p.index_copy_(s.dim, index, torch.randn(shape, generator=generator))


def _sides(group: Group):
    inputs = {tuple(x) for x in group.meta["inputs"]}
    reading = [s for s in group.slices if (s.param, s.dim) in inputs]
    writing = [s for s in group.slices if (s.param, s.dim) not in inputs]
    return reading, writing


# Which side may be zeroed so the other side is dead. "write": zero the writing side (rows,
# biases, norm elements), the reading side (input columns) then reads zeros. "read": zero the
# reading side, nothing downstream sees the writing side. Query heads only allow "read" (q = 0
# is uniform attention, not zero output); hidden channels only "write" (norm statistics);
# OLMo2's q_norm spans every head: its kv groups only allow "write", its query heads neither.
DIRECTIONS = {
    KV_GROUP: ("write", "read"),
    QUERY_HEAD: ("read",),
    MLP_CHANNEL: ("write", "read"),
    HIDDEN_CHANNEL: ("write",),
    ATTENTION_BLOCK: ("write",),
    MLP_BLOCK: ("write",),
}


def _zeroed_and_perturbed(group: Group, direction: str) -> tuple[list, list]:
    reading, writing = _sides(group)
    assert reading and writing, (group.kind, group.slices)
    zeroed, perturbed = (writing, reading) if direction == "write" else (reading, writing)
    if group.kind == HIDDEN_CHANNEL:  # an embedding column writes the stream (tied: it also reads it)
        embeddings = [s for s in perturbed if any(e in s.param for e in ("embed", "wte", "wpe"))]
        perturbed = [s for s in perturbed if s not in embeddings]
        zeroed = zeroed + embeddings
    return zeroed, perturbed


@pytest.mark.parametrize("model_type,lora", CASES)
def test_zeroing_oracle(model_type, lora):
    model, graph = model_and_graph(model_type, lora)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(1))
    rng = random.Random(0)
    try:
        for kind, directions in DIRECTIONS.items():
            groups = graph.of_kind(kind)
            if not groups:
                continue
            if model_type == "olmo2" and kind in (KV_GROUP, QUERY_HEAD):
                directions = ("write",) if kind == KV_GROUP else ()
            base = _logits(model, ids)
            for direction in directions:
                # A random group whose perturbation matters when nothing is zeroed (behind a ReLU,
                # some MLP channels are inactive on these few tokens: try a few).
                for group in rng.sample(groups, min(5, len(groups))):
                    zeroed, perturbed = _zeroed_and_perturbed(group, direction)
                    _edit(model, perturbed, fill=1)
                    live = (_logits(model, ids) - base).abs().max() > 1e-4
                    model.load_state_dict(state)
                    if live:
                        break
                assert live, f"perturbing {kind} groups must matter when nothing is zeroed"
                _edit(model, zeroed, fill=0)
                before = _logits(model, ids)
                _edit(model, perturbed, fill=1)
                delta = (_logits(model, ids) - before).abs().max().item()
                assert delta <= 1e-5, (kind, direction, group.layer, delta)
    finally:
        model.load_state_dict(state)


# --- attention shapes: multi-query (one KV head) and GQA ratios other than the shared models' 4/2 ---

# (architecture, query heads, KV heads, attention implementation); hidden size = 16 x heads. Gemma 3
# 270M is multi-query (4 heads, 1 KV head).
ATTENTION_SHAPES = [("llama", 4, 1, "eager"), ("llama", 4, 1, "sdpa"), ("gemma3_text", 4, 1, "sdpa"),
                    ("llama", 6, 2, "sdpa"), ("llama", 6, 3, "eager"), ("llama", 8, 2, "eager")]


@cache
def shaped_model(arch: str, heads: int, kv_heads: int, attention: str):
    """A tiny model with these head counts, and its graph (all kinds); shared, do not modify."""
    model = tiny_model(arch, attention=attention, hidden_size=HEAD_DIM * heads, num_attention_heads=heads,
                       num_key_value_heads=kv_heads)
    return model, build_graph(model, kinds=GROUP_KINDS)


def _heads_of(rows: tuple[int, ...]) -> list[int]:
    assert len(rows) % HEAD_DIM == 0
    heads = sorted({r // HEAD_DIM for r in rows})
    assert rows == tuple(r for h in heads for r in range(h * HEAD_DIM, (h + 1) * HEAD_DIM))
    return heads


@pytest.mark.parametrize("arch,heads,kv_heads,attention", ATTENTION_SHAPES)
def test_kv_groups_and_query_heads_follow_the_config(arch, heads, kv_heads, attention):
    """One kv_group per KV head (its k/v rows, the query heads sharing it, their o_proj columns), and
    n_rep query heads (the i-th query head of every KV group); parameter counts follow."""
    _, graph = shaped_model(arch, heads, kv_heads, attention)
    n_rep, hidden = heads // kv_heads, HEAD_DIM * heads
    for layer in range(LAYERS):
        kv_groups = [g for g in graph.of_kind(KV_GROUP) if g.layer == layer]
        query_heads = [g for g in graph.of_kind(QUERY_HEAD) if g.layer == layer]
        assert len(kv_groups) == kv_heads and len(query_heads) == n_rep
        for kv, group in enumerate(kv_groups):
            assert _heads_of(_rows(group, "k_proj", 0)) == _heads_of(_rows(group, "v_proj", 0)) == [kv]
            q_heads = list(range(kv * n_rep, (kv + 1) * n_rep))
            assert _heads_of(_rows(group, "q_proj", 0)) == _heads_of(_rows(group, "o_proj", 1)) == q_heads
            assert group.num_params(graph.param_shapes) == (2 * n_rep + 2) * HEAD_DIM * hidden
            assert group.prunable == (kv_heads > 1)
            if kv_heads == 1:
                assert "only KV head" in group.unprunable and ATTENTION_BLOCK in group.unprunable
        for i, group in enumerate(query_heads):
            assert {s.param.split(".")[-2] for s in group.slices} == {"q_proj", "o_proj"}
            q_heads = [kv * n_rep + i for kv in range(kv_heads)]
            assert _heads_of(_rows(group, "q_proj", 0)) == _heads_of(_rows(group, "o_proj", 1)) == q_heads
            assert group.num_params(graph.param_shapes) == 2 * kv_heads * HEAD_DIM * hidden


@pytest.mark.parametrize("arch,heads,kv_heads,attention", ATTENTION_SHAPES)
def test_head_groups_remove_as_they_zero(arch, heads, kv_heads, attention):
    """Zeroing one side of a head group silences the other, and removing groups equals zeroing them."""
    model, graph = shaped_model(arch, heads, kv_heads, attention)
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(1))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    prunable = [g for g in graph.of_kind(KV_GROUP) + graph.of_kind(QUERY_HEAD) if g.prunable]
    try:
        for group in prunable:
            zeroed, perturbed = _zeroed_and_perturbed(group, "read")
            _edit(model, zeroed, fill=0)
            before = _logits(model, ids)
            _edit(model, perturbed, fill=1)
            assert (_logits(model, ids) - before).abs().max().item() <= 1e-5, (group.kind, group.layer)
            model.load_state_dict(state)
    finally:
        model.load_state_dict(state)
    removed = [g for g in prunable if g.layer == 0][:1] + [g for g in graph.of_kind(QUERY_HEAD) if g.layer == 1][:1]
    reference = copy.deepcopy(model)
    zero_groups(reference, removed)
    pruned = compress(copy.deepcopy(model), removed)
    assert (_logits(pruned, ids) - _logits(reference, ids)).abs().max().item() <= 1e-4


def test_groups_stay_small_slotted_shared_meta_one_index_tuple():
    """A large model has hundreds of thousands of groups: each is slotted (no __dict__), the groups of one layout
    share one read-only meta, and a group's slices with the same indices share one tuple."""
    from tiny_models import model_and_graph

    _, graph = model_and_graph("llama")
    mlp = [g for g in graph.groups if g.kind == "mlp_channel" and g.layer == 0]
    assert not hasattr(mlp[0], "__dict__")
    assert mlp[0].meta is mlp[1].meta and mlp[0].meta["inputs"]
    indices = {id(s.index) for s in mlp[0].slices}
    assert len(mlp[0].slices) == 3 and len(indices) == 1


def test_a_packed_graph_unpacks_to_the_same_groups_in_order():
    """StructureGraph.pack/unpack (a trained method's model graph while LoRA trains): every group, slice, verdict
    and meta back, in order, in a fraction of the memory."""
    import json

    _, graph = model_and_graph("qwen2", True)
    graph = copy.deepcopy(graph)  # the cached graph stays as built
    graph.groups[3].unprunable = "layer0.mlp"  # verdicts travel too
    packed = graph.pack()
    again = StructureGraph.unpack(packed)
    assert again.to_dict() == graph.to_dict() and again.groups[3].unprunable == "layer0.mlp"
    assert len(packed) < len(json.dumps(graph.to_dict())) / 10
