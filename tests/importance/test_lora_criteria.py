"""LoRA-product saliency proxies (LoRAShear) equal hand computations on a tiny peft LoRA llama."""

from __future__ import annotations

import math

import pytest
from tiny_models import single_thread, tiny_model  # noqa: F401

from lorashear.errors import LorashearError
from lorashear.graph import build_graph
from lorashear.importance import ScoreContext, get_criterion
from lorashear.importance.base import per_parameter_scores
from lorashear.prune.api import tied_aliases

KINDS = ("kv_group", "mlp_channel", "hidden_channel")


@pytest.fixture(scope="module")
def setup():
    model = tiny_model("llama", lora=True)
    graph = build_graph(model, KINDS)
    return model, graph, ScoreContext(model, graph, aliases=tied_aliases(model))


def pieces(model, graph, index):
    """(W slice, s·BA slice) of every LoRA-carrying slice of group `index`, by hand from the peft layers."""
    modules = dict(model.named_modules())
    out = []
    for s in graph.groups[index].slices:
        if not s.param.endswith(".base_layer.weight"):
            continue
        layer = modules[s.param.removesuffix(".base_layer.weight")]
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        delta = layer.scaling["default"] * b @ a
        w = layer.base_layer.weight
        idx = list(s.index)
        out.append((w[idx], delta[idx]) if s.dim == 0 else (w[:, idx], delta[:, idx]))
    return [(w.detach().double(), d.detach().double()) for w, d in out]


def first(graph, kind, layer=1):
    return next(i for i, g in enumerate(graph.groups) if g.kind == kind and (kind == "hidden_channel" or g.layer == layer))


@pytest.mark.parametrize("kind", KINDS)
def test_products_match_hand_computation(setup, kind):
    model, graph, ctx = setup
    i = first(graph, kind)
    parts = pieces(model, graph, i)
    assert parts and any(".lora_" not in s.param and "norm" in s.param for s in graph.groups[i].slices) == (
        kind == "hidden_channel")
    dot = sum(float((w * d).sum()) for w, d in parts)
    ww = sum(float((w * w).sum()) for w, _ in parts)
    dd = sum(float((d * d).sum()) for _, d in parts)
    assert get_criterion("lora-taylor").score(ctx).scores[i] == pytest.approx(abs(dot), rel=1e-4)
    assert get_criterion("lora-taylor2").score(ctx).scores[i] == pytest.approx(0.5 * dot * dot, rel=1e-4)
    # norms and the embedding carry no LoRA: they stay out of ‖W_g‖
    assert get_criterion("lora-cos").score(ctx).scores[i] == pytest.approx(dot / math.sqrt(ww * dd) + 1, rel=1e-4)


def test_lhspg_mix_is_the_weighted_sum_of_normalised_per_parameter_proxies(setup):
    model, graph, ctx = setup
    mix = get_criterion("lhspg").score(ctx).scores
    expected = dict.fromkeys(mix, 0.0)
    for name in ("lora-taylor", "lora-taylor2", "lora-cos", "magnitude"):
        values = per_parameter_scores(graph, get_criterion(name).score(ctx), ctx.aliases)
        norm = math.sqrt(sum(v * v for v in values.values()))
        for i, v in values.items():
            expected[i] += 0.25 * v / norm
    assert mix == pytest.approx(expected, rel=1e-6)
    cos = get_criterion("lora-cos").score(ctx).scores
    alone = get_criterion("lhspg", weights="lora-cos:3").score(ctx).scores
    norm = math.sqrt(sum(v * v for v in cos.values()))
    assert alone == pytest.approx({i: v / norm for i, v in cos.items()}, rel=1e-6)
    assert get_criterion("lhspg", weights={"magnitude": 1, "lora-cos": 3}).mix == {"magnitude": 0.25, "lora-cos": 0.75}


def test_lora_criteria_refuse_a_model_without_lora():
    model = tiny_model("llama")
    graph = build_graph(model, ("mlp_channel",))
    for name in ("lora-taylor", "lora-cos", "lhspg"):
        with pytest.raises(LorashearError, match="no active LoRA adapter"):
            get_criterion(name).score(ScoreContext(model, graph))


@pytest.mark.parametrize("weights", ["nope:1", "lhspg:1", "magnitude:x", "magnitude:0", "magnitude:-1,lora-cos:2"])
def test_lhspg_weights_are_checked(weights):
    with pytest.raises(LorashearError, match="lhspg weights"):
        get_criterion("lhspg", weights=weights)


def test_a_data_criterion_in_the_mix_needs_data():
    assert get_criterion("lhspg", weights="taylor:1,magnitude:1").needs_data
    assert not get_criterion("lhspg").needs_data


def test_the_parsed_mix_is_no_option():
    with pytest.raises(LorashearError, match="has no option mix"):
        get_criterion("lhspg", mix={"magnitude": 1.0})


def test_lhspg_mix_computes_each_lora_product_once(setup, monkeypatch):
    """The four proxies (three of them read s·BA, lora-cos thrice) share one s·BA per LoRA layer; alone, a
    criterion keeps none of them (each is a weight-sized tensor)."""
    import lorashear.importance.base as base

    model, _, ctx = setup
    calls = []
    real = base.lora_delta
    monkeypatch.setattr(base, "lora_delta", lambda layer: calls.append(layer) or real(layer))
    mixed = get_criterion("lhspg").score(ctx).scores
    assert len(calls) == len(base.lora_layers(model)) > 0
    assert ctx.deltas is None  # the mix kept them on its own copy of the context
    calls.clear()
    get_criterion("lora-cos").score(ctx)
    assert len(calls) == 3 * len(base.lora_layers(model))
    assert get_criterion("lhspg").score(ctx).scores == mixed
