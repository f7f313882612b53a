"""FLAP: the standardised fluctuation score, its bias compensation, and both through compress/export."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from tiny_models import LAYERS, model_and_graph, single_thread  # noqa: F401
from torch import nn
from transformers import AutoModelForCausalLM

from lorashear.compress import compress, count_params, export
from lorashear.errors import LorashearError
from lorashear.graph import ATTENTION_BLOCK, HIDDEN_CHANNEL, KV_GROUP, MLP_CHANNEL
from lorashear.importance import ScoreContext, get_criterion
from lorashear.importance.flap import compensate, input_columns
from lorashear.prune.plan import select
from lorashear.pruned import load_pruned

BATCHES = torch.randint(3, 100, (6, 12), generator=torch.Generator().manual_seed(2))
KINDS = (KV_GROUP, MLP_CHANNEL)
PROJECTIONS = {KV_GROUP: "self_attn.o_proj", MLP_CHANNEL: "mlp.down_proj"}
READERS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj")


def flap_scores(model: nn.Module, graph, kinds=KINDS):
    """The flap criterion (its dense statistics kept in `.stats`) and its scores of `kinds`."""
    flap = get_criterion("flap")
    return flap, flap.score(ScoreContext(model, graph, BATCHES, batch_size=4, kinds=kinds)).scores


def projection_io(model: nn.Module, paths: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Input and output of the modules at `paths` over every token of BATCHES (float64)."""
    seen: dict[str, list] = {p: [] for p in paths}

    def hook(path: str):
        def record(_module, inputs, output) -> None:
            seen[path].append((inputs[0].reshape(-1, inputs[0].shape[-1]), output.reshape(-1, output.shape[-1])))

        return record

    handles = [model.get_submodule(p).register_forward_hook(hook(p)) for p in paths]
    with torch.no_grad():
        model(BATCHES)
    for h in handles:
        h.remove()
    return {p: tuple(torch.cat([io[k] for io in seen[p]]).double() for k in (0, 1)) for p in paths}


def test_score_is_the_standardised_fluctuation():
    """Hand computation on the merged model: Var(X_j)·‖W_j‖² (squared for o_proj), standardised per layer,
    averaged over the group's columns; a hidden channel's over every layer that reads it."""
    model, graph = model_and_graph("llama", True)
    kinds = (*KINDS, HIDDEN_CHANNEL)
    _, scores = flap_scores(model, graph, kinds)
    merged = copy.deepcopy(model).merge_and_unload()  # W + s·BA
    paths = [f"model.layers.{layer}.{p}" for layer in range(LAYERS) for p in (*PROJECTIONS.values(), *READERS)]
    io = projection_io(merged, paths)
    standardised = {}
    for path in paths:
        x, w = io[path][0], merged.get_submodule(path).weight.double()
        s = x.var(dim=0, unbiased=False) * w.pow(2).sum(dim=0)
        s = s**2 if path.endswith("o_proj") else s
        standardised[path] = (s - s.mean()) / s.std()
    readers = [p for p in paths if p.split(".", 3)[3] in READERS]
    for i, group in enumerate(graph.groups):
        if group.kind in PROJECTIONS:
            (columns,) = input_columns([group]).values()
            want = standardised[f"model.layers.{group.layer}.{PROJECTIONS[group.kind]}"][columns].mean()
        elif group.kind == HIDDEN_CHANNEL:
            (j,) = group.slices[0].index
            want = torch.stack([standardised[p][j] for p in readers]).mean()
        else:
            continue
        assert scores[i] == pytest.approx(float(want), rel=1e-4, abs=1e-6)  # float32 forward: merged vs adapter
    assert set(scores) == {i for i, g in enumerate(graph.groups) if g.kind in kinds}


def lowest(graph, scores, kind: str, layer: int, n: int) -> list:
    ranked = sorted((i for i, g in enumerate(graph.groups) if g.kind == kind and g.layer == layer), key=scores.get)
    return [graph.groups[i] for i in ranked[:n]]


@pytest.mark.parametrize("arch,lora", [("llama", True), ("qwen2", False), ("gpt2", True)])
def test_compensation_keeps_the_pruned_projections_mean_output(arch, lora):
    """On the calibration batches, each pruned output projection fed the dense model's kept inputs
    gives the dense projection's mean output; without the bias it does not."""
    model, graph = model_and_graph(arch, lora)
    flap, scores = flap_scores(model, graph)
    groups = [g for layer in range(LAYERS) for g in lowest(graph, scores, KV_GROUP, layer, 1)]
    groups += [g for layer in range(LAYERS) for g in lowest(graph, scores, MLP_CHANNEL, layer, 20 + 10 * layer)]
    columns = input_columns(groups)
    paths = {name: name.removesuffix(".weight").removesuffix(".base_layer") for name in columns}
    dense = projection_io(model, list(paths.values()))

    compensated = copy.deepcopy(model)
    assert sorted(compensate(compensated, groups, flap.stats)) == sorted(columns)
    compress(compensated, groups)
    uncompensated = compress(copy.deepcopy(model), groups)
    for name, path in paths.items():
        x, y = dense[path]
        kept = x[:, [j for j in range(x.shape[1]) if j not in set(columns[name])]].float()
        with torch.no_grad():
            got = compensated.get_submodule(path)(kept).double().mean(dim=0)
            bare = uncompensated.get_submodule(path)(kept).double().mean(dim=0)
        tolerance = 1e-5 * (1 + y.abs().max().item())
        assert (got - y.mean(dim=0)).abs().max().item() <= tolerance
        assert (bare - y.mean(dim=0)).abs().max().item() > 10 * tolerance  # without the bias the mean moves


@pytest.mark.parametrize("arch,lora,uniform,kinds", [
    ("llama", True, True, KINDS),
    ("llama", True, False, (*KINDS, HIDDEN_CHANNEL)),
    ("qwen2", True, False, KINDS),
    ("gemma", False, True, KINDS),
])
def test_flap_prunes_compensates_and_exports(arch, lora, uniform, kinds, tmp_path):
    """Global (or uniform) selection by FLAP's scores, compensation, compress, export: reloads equal."""
    model, graph = model_and_graph(arch, lora)
    flap, scores = flap_scores(model, graph, kinds)
    plan = select(graph, scores, 0.2, uniform, list(kinds), "flap")
    assert {g.kind for g in plan.groups} >= set(kinds) - {KV_GROUP}
    pruned = copy.deepcopy(model)
    compensated = compensate(pruned, plan.groups, flap.stats)
    assert compensated and all("o_proj" in n or "down_proj" in n for n in compensated)  # never a hidden channel's
    compress(pruned, plan.groups)
    with torch.no_grad():
        want = pruned(BATCHES).logits
    folder = export(pruned, None, tmp_path / "flap", plan.groups, count_params(model))
    plain = json.loads((folder / "pruning.json").read_text())["plain"]
    assert plain is (uniform and arch == "llama")  # gemma's down_proj bias has no config flag
    reloaded = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=not plain).eval()
    for loaded in (reloaded, load_pruned(folder)):
        with torch.no_grad():
            assert (loaded(BATCHES).logits - want).abs().max().item() <= 1e-4
    if not uniform:  # global selection: the layers end with different widths
        assert len({m.in_features for n, m in pruned.named_modules() if n.endswith("mlp.down_proj")}) > 1


def test_flap_refuses_whole_blocks_and_compensation_without_statistics():
    model, graph = model_and_graph("llama", False)
    with pytest.raises(LorashearError, match="not attention_block"):
        flap_scores(model, graph, kinds=(*KINDS, ATTENTION_BLOCK))
    with pytest.raises(LorashearError, match="score the groups with flap first"):
        compensate(copy.deepcopy(model), graph.of_kind(MLP_CHANNEL)[:2], {})
