"""`compress_skeleton` + `export(weights=FolderWeights(...))`: a compressed folder written from the uncompressed
model's files one tensor at a time equals the one written from the compressed model in memory, byte for byte."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import single_thread, tiny_model  # noqa: F401
from transformers import AutoModelForCausalLM

from lorashear.compress import FolderWeights, compress, compress_skeleton, count_params, export
from lorashear.errors import LorashearError
from lorashear.graph import GROUP_KINDS, HIDDEN_CHANNEL, KV_GROUP, MLP_BLOCK, MLP_CHANNEL, build_graph
from lorashear.io import WEIGHTS_INDEX
from lorashear.models import load_skeleton

# (architecture, dtype, uniform removal: a plain folder, else one whose layers differ (remote code))
CASES = [("llama", torch.float32, True), ("llama", torch.bfloat16, False), ("gemma3_text", torch.bfloat16, False),
         ("qwen3", torch.float32, False), ("phi3", torch.float32, True), ("gpt2", torch.float32, False)]


def chosen_groups(graph, uniform: bool):
    """Hidden channels (norm compensation), MLP channels and a KV group in every layer, or (not uniform) in layer 0
    only and layer 1's whole MLP."""
    groups = graph.of_kind(HIDDEN_CHANNEL)[:2]  # 62 channels: a multiple of the 2 query heads left (plain)
    layers = (0, 1) if uniform else (0,)
    for layer in layers:
        groups += [g for g in graph.of_kind(MLP_CHANNEL) if g.layer == layer][::7]
        groups += [g for g in graph.of_kind(KV_GROUP) if g.layer == layer][:1]
    if not uniform:
        groups += [g for g in graph.of_kind(MLP_BLOCK) if g.layer == 1]
    return groups


def tensors(folder) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update(load_file(file))
    return out


@pytest.mark.parametrize("arch,dtype,uniform", CASES)
def test_streamed_export_equals_the_in_memory_one(arch, dtype, uniform, tmp_path):
    kinds = tuple(k for k in GROUP_KINDS if k != "layer")
    tiny_model(arch).to(dtype).save_pretrained(tmp_path / "dense")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "dense", dtype=dtype)
    groups = chosen_groups(build_graph(model, kinds), uniform)
    before = count_params(model)
    live = export(compress(model, groups), None, tmp_path / "live", groups, before)

    skeleton = load_skeleton(str(tmp_path / "dense"), dtype)
    skeleton_groups = chosen_groups(build_graph(skeleton, kinds), uniform)
    assert [g.slices for g in skeleton_groups] == [g.slices for g in groups]
    assert count_params(skeleton) == before
    edits = compress_skeleton(skeleton, skeleton_groups)
    assert all(p.device.type == "meta" for p in skeleton.parameters())
    streamed = export(skeleton, None, tmp_path / "streamed", skeleton_groups, before,
                      weights=FolderWeights(tmp_path / "dense", edits))

    assert json.loads((live / "pruning.json").read_text())["plain"] is uniform
    ours, theirs = tensors(streamed), tensors(live)
    assert ours.keys() == theirs.keys()
    assert all(ours[k].dtype == theirs[k].dtype and torch.equal(ours[k], theirs[k]) for k in ours)
    for name in ("config.json", "pruning.json", "generation_config.json", "modeling_lorashear.py"):
        assert (streamed / name).is_file() == (live / name).is_file(), name
        if (live / name).is_file():
            assert (streamed / name).read_text() == (live / name).read_text(), name
    loaded = AutoModelForCausalLM.from_pretrained(streamed, dtype=dtype, trust_remote_code=not uniform)
    ids = torch.randint(1, 100, (1, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_streamed_export_reads_sharded_folders_and_refuses_wrong_ones(tmp_path):
    dense = tiny_model("llama")
    dense.save_pretrained(tmp_path / "dense", max_shard_size="100KB")
    assert (tmp_path / "dense" / WEIGHTS_INDEX).is_file()
    skeleton = load_skeleton(str(tmp_path / "dense"))
    groups = build_graph(skeleton, (MLP_CHANNEL,)).groups[:5]
    edits = compress_skeleton(skeleton, groups)
    folder = export(skeleton, None, tmp_path / "out", groups, count_params(dense),
                    weights=FolderWeights(tmp_path / "dense", edits))
    assert AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).model.layers[0].mlp.up_proj.out_features == 96 - 5

    with pytest.raises(LorashearError, match="meta device"):
        compress_skeleton(dense, groups)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LorashearError, match="no model.safetensors"):
        export(skeleton, None, tmp_path / "out2", groups, 1, weights=FolderWeights(tmp_path / "empty", edits))
    assert not (tmp_path / "out2").exists()
