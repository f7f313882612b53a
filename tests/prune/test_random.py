"""Random plans: target ratio reached, uniform layers alike, bad input refused."""

from __future__ import annotations

import collections
import copy

import pytest
from tiny_models import tiny_model

from lorashear.compress import compress, count_params
from lorashear.errors import LorashearError
from lorashear.graph import build_graph
from lorashear.prune import PruningPlan, random_plan
from lorashear.prune.api import tied_aliases


@pytest.fixture(scope="module")
def model_and_graph():
    model = tiny_model("llama", tie_word_embeddings=False)
    return model, build_graph(model, ("kv_group", "mlp_channel"))


@pytest.mark.parametrize("uniform", [False, True])
def test_ratio_reached_and_counts_exact(model_and_graph, uniform):
    model, graph = model_and_graph
    plan = random_plan(
        graph, 0.2, ["kv_group", "mlp_channel"], uniform=uniform, seed=1, aliases=tied_aliases(model)
    )
    assert plan.params_total == count_params(model)
    assert abs(plan.achieved_ratio - 0.2) < 0.01
    pruned = compress(copy.deepcopy(model), plan.groups)
    assert count_params(pruned) == plan.params_total - plan.params_removed
    if uniform:
        per_layer = collections.Counter((g.kind, g.layer) for g in plan.groups)
        for kind in ("kv_group", "mlp_channel"):
            assert len({n for (k, _), n in per_layer.items() if k == kind}) <= 1
    assert PruningPlan.from_dict(plan.to_dict()).groups == plan.groups


def test_seed_changes_plan(model_and_graph):
    _, graph = model_and_graph
    a = random_plan(graph, 0.2, ["mlp_channel"], seed=1)
    b = random_plan(graph, 0.2, ["mlp_channel"], seed=2)
    assert a.groups != b.groups


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1])
def test_bad_ratio(model_and_graph, ratio):
    with pytest.raises(LorashearError, match="ratio"):
        random_plan(model_and_graph[1], ratio, ["mlp_channel"])


def test_nothing_prunable(model_and_graph):
    with pytest.raises(LorashearError, match="no prunable group"):
        random_plan(model_and_graph[1], 0.2, ["hidden_channel"])


def test_unreachable_ratio_is_refused_with_the_reachable_maximum(model_and_graph):
    model, graph = model_and_graph
    # MLP channels are ~half of this tiny model; 90% can never be removed through them
    with pytest.raises(LorashearError, match=r"not reachable .* removes only \d+\.\d+%"):
        random_plan(graph, 0.9, ["mlp_channel"], aliases=tied_aliases(model))
    assert abs(random_plan(graph, 0.3, ["mlp_channel"], aliases=tied_aliases(model)).achieved_ratio - 0.3) < 0.01


@pytest.mark.parametrize("uniform", [False, True])
@pytest.mark.parametrize("multiple", [8, 5])
def test_multiple_of_keeps_channel_counts_divisible(uniform, multiple):
    """Kept MLP channels (per layer) and hidden channels stay a positive multiple; the ratio is still met."""
    model = tiny_model("llama", tie_word_embeddings=False)
    graph = build_graph(model, ("kv_group", "mlp_channel", "hidden_channel"))
    kinds = ["kv_group", "mlp_channel", "hidden_channel"]
    plan = random_plan(graph, 0.3, kinds, uniform=uniform, seed=2, aliases=tied_aliases(model), multiple_of=multiple)
    assert abs(plan.achieved_ratio - 0.3) < 0.02 and plan.settings["multiple_of"] == multiple
    totals = collections.Counter((g.kind, g.layer) for g in graph.groups)
    removed = collections.Counter((g.kind, g.layer) for g in plan.groups)
    assert removed[("hidden_channel", None)] > 0 and any(removed[("mlp_channel", n)] for n in (0, 1))
    for (kind, layer), total in totals.items():
        if kind != "kv_group":
            kept = total - removed[(kind, layer)]
            assert kept > 0 and kept % multiple == 0, (kind, layer, kept)
    pruned = compress(copy.deepcopy(model), plan.groups)
    assert pruned.get_input_embeddings().weight.shape[1] % multiple == 0


def test_chunks_remove_prefixes_that_keep_a_multiple():
    from lorashear.prune.plan import _chunks

    assert _chunks(list(range(10)), 4) == [[0, 1], [2, 3, 4, 5]]  # keeps 8, then 4
    assert _chunks(list(range(8)), 4) == [[0, 1, 2, 3]]
    assert _chunks(list(range(3)), 4) == []  # fewer than one multiple: nothing may go
    assert _chunks(list(range(4)), 1) == [[0], [1], [2]]  # the default: one at a time, the best kept


def test_multiple_of_must_be_positive(model_and_graph):
    with pytest.raises(LorashearError, match="multiple must be a positive integer"):
        random_plan(model_and_graph[1], 0.2, ["mlp_channel"], multiple_of=0)
