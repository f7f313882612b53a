"""Knowledge-distribution analysis: finds a cluster made critical by construction; probes restore the model."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import single_thread, tiny_model  # noqa: F401

from lorashear.errors import LorashearError
from lorashear.graph import build_graph
from lorashear.importance import ScoreContext, get_criterion
from lorashear.knowledge import (
    KnowledgeConfig,
    analyze_knowledge,
    choose_unprunable,
    clusters_of,
    heatmap,
    mark_unprunable,
)

KINDS = ("kv_group", "mlp_channel")
CRITICAL = 3  # layer whose MLP is made to carry the model


@pytest.fixture(scope="module")
def setup():
    """A confident model (large lm_head) whose MLP output comes almost all from layer 3, and held-out text it
    predicts itself (greedy): zeroing layer 3's MLP channels raises the loss, other MLPs barely matter."""
    model = tiny_model("llama", num_hidden_layers=6, tie_word_embeddings=False)
    with torch.no_grad():
        model.lm_head.weight.mul_(100.0)
        for i, layer in enumerate(model.model.layers):
            layer.mlp.down_proj.weight.mul_(30.0 if i == CRITICAL else 0.3)
    prompts = torch.randint(0, 128, (4, 2), generator=torch.Generator().manual_seed(1))
    held_out = model.generate(prompts, max_new_tokens=14, min_new_tokens=14, do_sample=False, pad_token_id=0)
    graph = build_graph(model, KINDS)
    scores = get_criterion("magnitude").score(ScoreContext(model, graph))
    return model, graph, scores, held_out


def test_clusters_are_each_layers_attention_and_mlp(setup):
    _, graph, _, _ = setup
    names = [c.name for c in clusters_of(graph, KINDS)]
    assert names == [f"layer{i}.{k}" for i in range(6) for k in ("attention", "mlp")]


def test_auto_rule_finds_the_critical_cluster_and_probes_restore_the_model(setup):
    model, graph, scores, HELD_OUT = setup
    before = {n: t.clone() for n, t in model.state_dict().items()}
    result = analyze_knowledge(model, graph, KINDS, KnowledgeConfig(), scores, HELD_OUT, log=lambda s: None)
    assert [c.name for c in result.unprunable] == [f"layer{CRITICAL}.mlp"]
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())  # restored exactly
    mlps = [c for c in result.clusters if c.kind == "mlp"]
    worst = max(mlps, key=lambda c: c.mean_deviation)
    assert worst.name == f"layer{CRITICAL}.mlp" and set(worst.deviation) == {"0.25", "0.5"}
    assert worst.mean_deviation > 10 * max(c.mean_deviation for c in mlps if c is not worst)
    assert result.dense_loss > 0
    gamma = analyze_knowledge(model, graph, KINDS, KnowledgeConfig(unprunable_ratio=0.25), scores, HELD_OUT,
                              log=lambda s: None)
    top = sorted(result.clusters, key=lambda c: c.mean_deviation, reverse=True)[:3]  # floor(0.25 × 12)
    assert {c.name for c in gamma.unprunable} == {c.name for c in top}


def test_mark_unprunable_records_the_reason(setup):
    model, graph, scores, HELD_OUT = setup
    import copy

    graph = copy.deepcopy(graph)
    result = analyze_knowledge(model, graph, KINDS, KnowledgeConfig(rule="fixed"), log=lambda s: None)
    marked = mark_unprunable(graph, result)
    # 6 layers: the first max(1, round(0.6)) = 1 layer and the last
    assert {c.name for c in result.unprunable} == {"layer0.attention", "layer0.mlp", "layer5.attention", "layer5.mlp"}
    reasons = {g.unprunable for g in graph.groups if g.layer in (0, 5)}
    assert reasons == {"knowledge"} and marked == sum(g.layer in (0, 5) for g in graph.groups)
    assert all(g.prunable for g in graph.groups if g.layer not in (0, 5))


def test_none_rule_marks_nothing(setup):
    _, graph, _, _ = setup
    clusters = clusters_of(graph, KINDS)
    choose_unprunable(clusters, KnowledgeConfig(rule="none"), 6)
    assert not any(c.unprunable for c in clusters)


def test_json_and_heatmap(setup, tmp_path):
    model, graph, scores, HELD_OUT = setup
    result = analyze_knowledge(model, graph, KINDS, KnowledgeConfig(ratios=(0.5,)), scores, HELD_OUT,
                               log=lambda s: None)
    table = json.loads(result.save(tmp_path / "k.json").read_text())
    assert f"layer{CRITICAL}.mlp" in table["unprunable"] and len(table["clusters"]) == 12
    row = table["clusters"][2 * CRITICAL + 1]
    assert row["unprunable"] and row["layer"] == CRITICAL and row["kind"] == "mlp" and row["deviation"]["0.5"] > 0
    png = heatmap(result, tmp_path / "k.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_one_group_clusters_and_unprobed_rules_have_no_deviation(setup, tmp_path):
    """A cluster with one prunable group is not probed (selection keeps one per layer and kind): no deviation,
    never ranked; rules that do not probe leave every cell unmeasured (None in JSON, blank in the heatmap)."""
    import copy

    model, graph, scores, HELD_OUT = setup
    graph = copy.deepcopy(graph)
    kv = [g for g in graph.groups if g.kind == "kv_group" and g.layer == 2]
    assert len(kv) > 1
    for g in kv[1:]:
        g.unprunable = "test"
    result = analyze_knowledge(model, graph, KINDS, KnowledgeConfig(ratios=(0.5,)), scores, HELD_OUT,
                               log=lambda s: None)
    lone = next(c for c in result.clusters if c.name == "layer2.attention")
    assert lone.groups == [graph.groups.index(kv[0])] and lone.deviation == {} and lone.mean_deviation is None
    assert not lone.unprunable and all(c.deviation for c in result.clusters if c is not lone)
    assert json.loads(result.save(tmp_path / "k.json").read_text())["clusters"][4]["mean_deviation"] is None
    unmeasured = analyze_knowledge(model, graph, KINDS, KnowledgeConfig(rule="none"), log=lambda s: None)
    assert all(c.mean_deviation is None for c in unmeasured.clusters)
    assert heatmap(unmeasured, tmp_path / "none.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("kwargs, match", [
    ({"unprunable_ratio": 1.0}, r"γ must be in \[0, 1\)"),
    ({"unprunable_ratio": -0.1}, r"γ must be in \[0, 1\)"),
    ({"rule": "sometimes"}, "must be one of"),
    ({"ratios": (0.0,)}, "ratios must be in"),
])
def test_bad_settings(kwargs, match):
    with pytest.raises(LorashearError, match=match):
        KnowledgeConfig(**kwargs)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3_text"])
def test_replaying_earlier_layers_gives_the_full_models_loss(arch):
    from lorashear.compress import zeroed
    from lorashear.importance import mean_loss
    from lorashear.knowledge.replay import LayerReplay

    model = tiny_model(arch, num_hidden_layers=3) if arch != "gpt2" else tiny_model(arch, n_layer=3)
    graph = build_graph(model, KINDS)
    batches = torch.randint(0, 128, (3, 10), generator=torch.Generator().manual_seed(2))
    replay = LayerReplay(model, batches, batch_size=2)
    assert replay.layers is not None and len(replay.layers) == 3
    assert replay.dense_loss == pytest.approx(mean_loss(model, batches, 2), abs=1e-6)
    for layer in (1, 2):
        groups = [g for g in graph.groups if g.layer == layer][:3]
        with zeroed(model, groups):
            assert replay.loss(layer) == pytest.approx(mean_loss(model, batches, 2), abs=1e-5)
    assert all(type(m).__name__ != "_Cached" for m in model.modules())  # the real layers are back


def test_an_unknown_rule_names_every_rule():
    """The error lists the four rules (it used to leave out `ratio`)."""
    from lorashear.errors import LorashearError
    from lorashear.knowledge import KnowledgeConfig

    with pytest.raises(LorashearError, match="auto, none, fixed, ratio"):
        KnowledgeConfig(rule="sometimes")
