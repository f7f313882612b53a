"""The oracle: removing discovered groups == zeroing them, for every architecture we claim; exports reload to the same.

Groups come from `build_graph` (every kind). Around LayerNorm (gpt2, opt) a removed hidden channel is
dropped from the norm's statistics (compress's documented behaviour): the zeroed reference computes
those LayerNorms over the kept channels, exactly.
"""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch
from tiny_models import ARCHS, LAYERS, MHA_ARCHS, VARIANTS, model_and_graph, single_thread  # noqa: F401
from torch import nn
from transformers import AutoModelForCausalLM

from lorashear.compress import (
    PRUNING_FORMAT,
    compress,
    count_params,
    export,
    read_pruning_record,
    removed_indices,
    zero_groups,
)
from lorashear.graph import (
    ATTENTION_BLOCK,
    GROUP_KINDS,
    HIDDEN_CHANNEL,
    MLP_BLOCK,
    QUERY_HEAD,
    groups_from_json,
)
from lorashear.pruned import load_pruned

IDS = torch.randint(1, 100, (2, 9), generator=torch.Generator().manual_seed(1))


def pick(groups, rng: random.Random, attention_layer: int, frac: float = 0.3):
    """A random subset of every kind: about `frac` of each (kind, layer), never all of it, plus the whole
    attention of `attention_layer` and the whole MLP of a random layer."""
    by_slot: dict = {}
    for g in groups:
        by_slot.setdefault((g.kind, g.layer), []).append(g)
    chosen = []
    mlp_layer = rng.randrange(LAYERS)
    for (kind, layer), gs in by_slot.items():
        if kind == ATTENTION_BLOCK:
            chosen += [g for g in gs if layer == attention_layer]
        elif kind == MLP_BLOCK:
            chosen += [g for g in gs if layer == mlp_layer]
        elif len(gs) > 1:
            chosen += rng.sample(gs, max(1, int(frac * len(gs))))
    return chosen


def kept_layernorm_reference(model: nn.Module, groups) -> None:
    """LayerNorms of the zeroed reference computed over the kept hidden channels (what removal does)."""
    hidden = removed_indices([g for g in groups if g.kind == HIDDEN_CHANNEL])
    for name, module in model.named_modules():
        key = name + ".weight"
        if not isinstance(module, nn.LayerNorm) or key not in hidden:
            continue
        keep = torch.tensor([i for i in range(module.normalized_shape[0]) if i not in set(hidden[key][0])])

        def forward(x, module=module, keep=keep):
            out = torch.zeros_like(x)
            out[..., keep] = nn.functional.layer_norm(
                x[..., keep], (len(keep),), module.weight[keep], module.bias[keep], module.eps
            )
            return out

        module.forward = forward


def logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def reference_and_pruned(arch: str, removed) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    model, _ = model_and_graph(arch, VARIANTS[arch][2])
    reference = copy.deepcopy(model)
    zero_groups(reference, removed)
    kept_layernorm_reference(reference, removed)
    return model, compress(copy.deepcopy(model), removed), logits(reference)


def assert_generation_consistent(model: nn.Module) -> None:
    cached = model.generate(IDS, max_new_tokens=6, do_sample=False, use_cache=True)
    uncached = model.generate(IDS, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("index,arch", list(enumerate(ARCHS)), ids=ARCHS)
def test_remove_equals_zero_and_export_reloads(index, arch, tmp_path):
    _, graph = model_and_graph(arch, VARIANTS[arch][2])
    attention_layer = index % LAYERS  # half the architectures lose layer 0's attention
    removed = pick(graph.groups, random.Random(arch), attention_layer)
    kinds = set(GROUP_KINDS) - ({QUERY_HEAD} if arch in MHA_ARCHS else set())
    assert {g.kind for g in removed} == kinds
    model, pruned, want = reference_and_pruned(arch, removed)
    assert (logits(pruned) - want).abs().max().item() <= 1e-4
    params_before = count_params(model)
    assert count_params(pruned) < params_before

    folder = export(pruned, None, tmp_path / "pruned", removed, params_before)
    plan = json.loads((folder / "pruning.json").read_text())
    assert plan["format"] == PRUNING_FORMAT  # the export says which format its `removed` is in
    assert plan["params_before"] == params_before and plan["params_after"] == count_params(pruned)
    assert groups_from_json(plan["removed"]) == removed  # every group, in order
    assert read_pruning_record(folder)["removed"] == removed
    assert not plan["plain"]  # layers differ
    reloaded = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    assert (logits(reloaded) - want).abs().max().item() <= 1e-4
    assert_generation_consistent(reloaded)
    assert (logits(load_pruned(folder)) - want).abs().max().item() <= 1e-4


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_whole_attention_of_layer0_with_kv_cache(arch):
    """Only layer 0's attention goes: the first cache layer is empty, generation still agrees."""
    _, graph = model_and_graph(arch, VARIANTS[arch][2])
    removed = [g for g in graph.of_kind(ATTENTION_BLOCK) if g.layer == 0]
    _, pruned, want = reference_and_pruned(arch, removed)
    assert (logits(pruned) - want).abs().max().item() <= 1e-4
    assert_generation_consistent(pruned)


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_unmerged_adapter_reloads_onto_pruned_base(arch, tmp_path):
    from peft import PeftModel

    _, graph = model_and_graph(arch, True)
    removed = pick(graph.groups, random.Random(1), attention_layer=1)
    model, pruned, want = reference_and_pruned(arch, removed)
    folder = export(pruned, None, tmp_path / "pruned", removed, count_params(model), merge_lora=False)
    base = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    with_adapter = PeftModel.from_pretrained(base, folder / "adapter").eval()
    assert (logits(with_adapter) - want).abs().max().item() <= 1e-4
    with with_adapter.disable_adapter():  # the adapter matters
        assert (logits(with_adapter) - want).abs().max().item() > 1e-3
    assert (logits(load_pruned(folder)) - want).abs().max().item() <= 1e-4


def test_export_of_a_lora_model_merges_in_place(tmp_path, monkeypatch):
    """A peft model's LoRA is merged into it in place: no deep copy of the model (an 8B copy would not fit);
    the folder still computes what the model did."""
    import copy

    from torch import nn

    _, graph = model_and_graph("llama", True)
    removed = pick(graph.groups, random.Random(2), attention_layer=1)
    model, pruned, want = reference_and_pruned("llama", removed)
    real_deepcopy = copy.deepcopy

    def no_model_copies(value, *args):
        assert not isinstance(value, nn.Module), "export copied the model"
        return real_deepcopy(value, *args)

    monkeypatch.setattr(copy, "deepcopy", no_model_copies)
    folder = export(pruned, None, tmp_path / "pruned", removed, count_params(model))
    monkeypatch.undo()
    assert (logits(load_pruned(folder)) - want).abs().max().item() <= 1e-4


# Where a stock config cannot describe fewer heads, uniform head removal needs the remote code too.
HEADS_NOT_PLAIN = {
    "gpt2": "head_dim is derived as hidden_size / num_heads",
    "opt": "head_dim is derived as hidden_size / num_heads",
    "olmo2": "q_norm/k_norm normalise over all heads: removing heads rescales their eps",
}


@pytest.mark.parametrize("arch", ARCHS)
def test_uniform_removal_exports_a_plain_folder(arch, tmp_path):
    """The same number of heads and MLP channels in every layer: stock `from_pretrained`, no remote code."""
    _, graph = model_and_graph(arch, VARIANTS[arch][2])
    removed = []
    for layer in range(LAYERS):
        if arch not in HEADS_NOT_PLAIN:
            removed += [g for g in graph.of_kind("kv_group") if g.layer == layer][:1]
        removed += [g for g in graph.of_kind("mlp_channel") if g.layer == layer][layer : layer + 10]
    model, pruned, want = reference_and_pruned(arch, removed)
    folder = export(pruned, None, tmp_path / "pruned", removed, count_params(model))
    assert json.loads((folder / "pruning.json").read_text())["plain"]
    assert not (folder / "modeling_lorashear.py").exists()
    stock = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert (logits(stock) - want).abs().max().item() <= 1e-4
    assert_generation_consistent(stock)


@pytest.mark.parametrize("channels,plain", [(3, False), (4, True)], ids=["indivisible", "divisible"])
def test_uniform_hidden_channels_export(channels, plain, tmp_path):
    """A hidden width the stock config refuses (not a multiple of the heads) ships the remote layout; a
    width it accepts stays plain. Both reload to the pruned logits."""
    _, graph = model_and_graph("llama", VARIANTS["llama"][2])
    removed = graph.of_kind(HIDDEN_CHANNEL)[:channels]
    model, pruned, want = reference_and_pruned("llama", removed)
    folder = export(pruned, None, tmp_path / "pruned", removed, count_params(model))
    assert json.loads((folder / "pruning.json").read_text())["plain"] is plain
    reloaded = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=not plain).eval()
    assert (logits(reloaded) - want).abs().max().item() <= 1e-4
    assert (logits(load_pruned(folder)) - want).abs().max().item() <= 1e-4
