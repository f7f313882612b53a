"""Output biases added to a model (FLAP's compensation) survive compress and export, in both folder kinds."""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch
from tiny_models import LAYERS, model_and_graph, single_thread  # noqa: F401
from torch import nn
from transformers import AutoModelForCausalLM

from lorashear.compress import (
    add_output_bias,
    compress,
    count_params,
    export,
    zero_groups,
    zeroed,
)
from lorashear.errors import LorashearError
from lorashear.graph import HIDDEN_CHANNEL, KV_GROUP, MLP_CHANNEL, build_graph
from lorashear.pruned import REMOTE_FILE, load_pruned

IDS = torch.randint(1, 100, (2, 9), generator=torch.Generator().manual_seed(1))
OUTPUTS = ("o_proj", "down_proj")


def logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def with_biases(model: nn.Module, leaves: tuple[str, ...] = OUTPUTS) -> nn.Module:
    """`model` with random output biases on the `leaves` projections (random, so that they matter)."""
    names = [n for n, _ in model.named_modules() if n.rpartition(".")[2] in leaves]
    add_output_bias(model, names)
    with torch.no_grad():
        for name in names:
            getattr(model.get_submodule(name), "base_layer", model.get_submodule(name)).bias.normal_()
    return model


def uniform_groups(graph, kv: int = 1, mlp: int = 10) -> list:
    """The same number of KV groups and MLP channels in every layer (a plain folder, without biases)."""
    removed = []
    for layer in range(LAYERS):
        removed += [g for g in graph.of_kind(KV_GROUP) if g.layer == layer][:kv]
        removed += [g for g in graph.of_kind(MLP_CHANNEL) if g.layer == layer][layer : layer + mlp]
    return removed


def varied_groups(graph, seed: int = 0) -> list:
    """Different MLP widths per layer, so the folder needs the remote code."""
    rng = random.Random(seed)
    removed = [rng.choice([g for g in graph.of_kind(KV_GROUP) if g.layer == 0])]
    for layer in range(LAYERS):
        removed += rng.sample([g for g in graph.of_kind(MLP_CHANNEL) if g.layer == layer], 5 + 7 * layer)
    return removed


def assert_reloads(model: nn.Module, folder, plain: bool) -> None:
    """The folder is of the expected kind and every loader gives the in-memory model's logits."""
    want = logits(model)
    assert json.loads((folder / "pruning.json").read_text())["plain"] is plain
    assert (folder / REMOTE_FILE.name).exists() is not plain
    reloaded = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=not plain).eval()
    if (folder / "adapter").is_dir():
        from peft import PeftModel

        reloaded = PeftModel.from_pretrained(reloaded, folder / "adapter").eval()
    assert (logits(reloaded) - want).abs().max().item() <= 1e-4
    assert (logits(load_pruned(folder)) - want).abs().max().item() <= 1e-4


@pytest.mark.parametrize("leaves", [("o_proj",), OUTPUTS], ids=["attention", "attention+mlp"])
def test_llama_biases_set_config_flags_and_stay_plain(leaves, tmp_path):
    model, graph = model_and_graph("llama", True)
    removed = uniform_groups(graph)
    pruned = compress(with_biases(copy.deepcopy(model), leaves), removed)
    folder = export(pruned, None, tmp_path / "pruned", removed, count_params(model))
    assert_reloads(pruned, folder, plain=True)
    config = json.loads((folder / "config.json").read_text())
    assert config["attention_bias"] is True
    assert config["mlp_bias"] is ("down_proj" in leaves)  # only the flags the biases need
    stock = AutoModelForCausalLM.from_pretrained(folder)
    # The siblings the flag creates are zero; the added biases are the model's.
    assert stock.model.layers[0].self_attn.q_proj.bias.abs().max() == 0
    assert stock.model.layers[0].self_attn.o_proj.bias.abs().max() > 0
    # The in-memory model (its LoRA merged in place by the export) gets no flag and no sibling biases.
    assert pruned.get_base_model().model.layers[0].self_attn.q_proj.bias is None
    assert not pruned.get_base_model().config.attention_bias


@pytest.mark.parametrize("arch", ["qwen2", "gemma"])
def test_biases_without_a_config_flag_use_the_remote_layout(arch, tmp_path):
    """qwen2's o_proj has no flag; gemma's down_proj has none: uniform removal still needs the remote code."""
    model, graph = model_and_graph(arch, True)
    removed = uniform_groups(graph)
    pruned = compress(with_biases(copy.deepcopy(model)), removed)
    folder = export(pruned, None, tmp_path / "pruned", removed, count_params(model))
    assert_reloads(pruned, folder, plain=False)
    assert json.loads((folder / "config.json").read_text()).get("attention_bias") in (None, False)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_biases_in_layers_that_differ(arch, tmp_path):
    model, graph = model_and_graph(arch, True)
    removed = varied_groups(graph)
    pruned = compress(with_biases(copy.deepcopy(model)), removed)
    folder = export(pruned, None, tmp_path / "pruned", removed, count_params(model), merge_lora=False)
    assert_reloads(pruned, folder, plain=False)


def test_hidden_channels_cut_biases_added_after_the_graph(tmp_path):
    """Groups built before the biases existed still remove the biases' rows (zeroed == removed)."""
    model, graph = model_and_graph("llama", True)
    removed = graph.of_kind(HIDDEN_CHANNEL)[:5] + varied_groups(graph)
    biased = with_biases(copy.deepcopy(model))
    reference = copy.deepcopy(biased)
    zero_groups(reference, removed)
    with zeroed(biased, removed):  # the temporary zeroing agrees
        assert torch.equal(logits(biased), logits(reference))
    pruned = compress(biased, removed)
    assert (logits(pruned) - logits(reference)).abs().max().item() <= 1e-4
    folder = export(pruned, None, tmp_path / "pruned", removed, count_params(model))
    assert_reloads(pruned, folder, plain=False)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_biases_added_between_two_compressions(arch, tmp_path):
    """Biases added after a first compression are rebuilt after that stage, before the second."""
    model, graph = model_and_graph(arch, False)
    first = graph.of_kind(HIDDEN_CHANNEL)[:4] + varied_groups(graph)
    pruned = with_biases(compress(copy.deepcopy(model), first))
    second_graph = build_graph(pruned, kinds=(MLP_CHANNEL, HIDDEN_CHANNEL))
    second = second_graph.of_kind(HIDDEN_CHANNEL)[:3] + second_graph.of_kind(MLP_CHANNEL)[:4]
    compress(pruned, second)
    folder = export(pruned, None, tmp_path / "pruned", first + second, count_params(model))
    assert_reloads(pruned, folder, plain=False)


@pytest.mark.parametrize("plain", [True, False], ids=["plain", "remote"])
def test_a_loaded_pruned_folder_compresses_again(plain, tmp_path):
    """Load an exported folder, add biases, compress again, export: the second folder reloads the same."""
    model, graph = model_and_graph("llama", False)
    first = uniform_groups(graph) if plain else varied_groups(graph)
    folder = export(compress(copy.deepcopy(model), first), None, tmp_path / "first", first, count_params(model))
    loaded = with_biases(load_pruned(folder), ("o_proj",))
    second_graph = build_graph(loaded, kinds=(MLP_CHANNEL,))
    second = [g for g in second_graph.of_kind(MLP_CHANNEL) if g.layer == 1][:6]
    compress(loaded, second)
    again = export(loaded, None, tmp_path / "second", second, count_params(model))
    assert_reloads(loaded, again, plain=False)


def test_add_output_bias_keeps_existing_biases_and_refuses_other_modules():
    model = copy.deepcopy(model_and_graph("qwen2", False)[0])
    q_bias = model.model.layers[0].self_attn.q_proj.bias
    add_output_bias(model, ["model.layers.0.self_attn.q_proj"])
    assert model.model.layers[0].self_attn.q_proj.bias is q_bias
    assert not (getattr(model.config, "lorashear", None) or {}).get("biases")
    with pytest.raises(LorashearError, match="not a linear layer"):
        add_output_bias(model, ["model.layers.0.input_layernorm"])
    with pytest.raises(LorashearError, match="no module"):
        add_output_bias(model, ["model.layers.9.self_attn.o_proj"])
