"""Each criterion equals a hand computation on a tiny model; the registry refuses bad names and options."""

from __future__ import annotations

import pytest
import torch
from tiny_models import single_thread, tiny_model  # noqa: F401

from lorashear.errors import LorashearError
from lorashear.graph import build_graph
from lorashear.importance import CRITERIA, ScoreContext, get_criterion
from lorashear.prune.api import tied_aliases

BATCHES = torch.randint(0, 128, (6, 12), generator=torch.Generator().manual_seed(0))
KINDS = ("kv_group", "mlp_channel", "hidden_channel")
FLAGS: dict[int, dict[str, bool]] = {}  # requires_grad flags of each fixture model as built


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "lora"])
def setup(request):
    model = tiny_model("llama", lora=request.param, tie_word_embeddings=False)
    FLAGS[id(model)] = {n: p.requires_grad for n, p in model.named_parameters()}
    graph = build_graph(model, KINDS)
    return model, graph, ScoreContext(model, graph, BATCHES, batch_size=4, aliases=tied_aliases(model))


def merged(model) -> torch.nn.Module:
    """The same function without LoRA (W + s·BA merged), for hand computations on plain weights."""
    import copy

    return copy.deepcopy(model).merge_and_unload() if hasattr(model, "merge_and_unload") else model


def mlp_group(graph, layer: int, channel: int) -> int:
    for i, g in enumerate(graph.groups):
        if g.kind == "mlp_channel" and g.layer == layer:
            if any(s.param.endswith("gate_proj.weight") or s.param.endswith("gate_proj.base_layer.weight")
                   for s in g.slices if s.index == (channel,)):
                return i
    raise AssertionError("channel not found")


def mlp_weights(model, layer: int):
    mlp = merged(model).model.layers[layer].mlp
    return mlp.gate_proj.weight.detach(), mlp.up_proj.weight.detach(), mlp.down_proj.weight.detach()


def test_magnitude_is_the_group_l2_norm_of_effective_weights(setup):
    model, graph, ctx = setup
    scores = get_criterion("magnitude").score(ctx).scores
    gate, up, down = mlp_weights(model, 1)
    c = 5
    expected = (gate[c].pow(2).sum() + up[c].pow(2).sum() + down[:, c].pow(2).sum()).sqrt()
    assert scores[mlp_group(graph, 1, c)] == pytest.approx(float(expected), rel=1e-5)
    mean = get_criterion("magnitude", reduce="mean").score(ctx).scores
    expected_mean = (gate[c].abs().sum() + up[c].abs().sum() + down[:, c].abs().sum()) / (3 * gate.shape[1])
    assert mean[mlp_group(graph, 1, c)] == pytest.approx(float(expected_mean), rel=1e-5)


def hand_gradients(model):
    """∂(mean loss over BATCHES)/∂W of layer 0's MLP weights, by autograd on the merged model."""
    plain = merged(model)
    mlp = plain.model.layers[0].mlp
    weights = (mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)
    flags = [w.requires_grad for w in weights]
    for w in weights:
        w.requires_grad_(True)
    total = 0.0
    for start in range(0, len(BATCHES), 4):
        batch = BATCHES[start : start + 4]
        total = total + plain(input_ids=batch, labels=batch).loss * len(batch) / len(BATCHES)
    grads = torch.autograd.grad(total, weights)
    for w, flag in zip(weights, flags, strict=True):
        w.requires_grad_(flag)
    return [w.detach() for w in weights], grads


def test_taylor_element_and_vector_match_autograd(setup):
    model, graph, ctx = setup
    (gate, up, down), (g_gate, g_up, g_down) = hand_gradients(model)
    c = 3
    wg = [(gate * g_gate)[c], (up * g_up)[c], (down * g_down)[:, c]]
    element = sum(t.abs().sum() for t in wg)
    vector = sum(t.sum().abs() for t in wg)  # LLM-Pruner: |Σ| within each weight's row/column, then summed
    i = mlp_group(graph, 0, c)
    assert get_criterion("taylor").score(ctx).scores[i] == pytest.approx(float(element), rel=1e-4)
    assert get_criterion("taylor", variant="vector").score(ctx).scores[i] == pytest.approx(float(vector), rel=1e-4)
    # every requires_grad flag and the training mode come back as they were; no gradient is left behind
    assert all(p.grad is None for p in model.parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == FLAGS[id(model)]
    assert not model.training


def test_taylor_reads_the_callers_gradients_when_given(setup):
    """ScoreContext.gradients (LHSPG's training steps) replace the calibration passes: equal gradients, equal
    scores; doubled gradients, doubled scores; and no batch is needed."""
    from dataclasses import replace

    from lorashear.importance.taylor import accumulate_gradients

    model, graph, ctx = setup
    grads = accumulate_gradients(model, BATCHES, ctx.scored_params(), batch_size=4)
    given = replace(ctx, batches=None, gradients=grads, memo={})
    taylor = get_criterion("taylor")
    assert taylor.reads_gradients and not get_criterion("wanda-sp").reads_gradients
    expected = taylor.score(ctx).scores
    assert taylor.score(given).scores == pytest.approx(expected, rel=1e-6)
    doubled = replace(given, gradients={n: 2 * g for n, g in grads.items()})
    assert taylor.score(doubled).scores == pytest.approx({i: 2 * v for i, v in expected.items()}, rel=1e-6)


def test_wanda_sp_uses_input_norms(setup):
    model, graph, ctx = setup
    plain = merged(model)
    mlp = plain.model.layers[1].mlp
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o, key=key: seen.setdefault(key, []).append(i[0].reshape(-1, i[0].shape[-1])))
             for key, m in (("in", mlp.gate_proj), ("mid", mlp.down_proj))]
    with torch.no_grad():
        for start in range(0, len(BATCHES), 4):
            plain(input_ids=BATCHES[start : start + 4])
    for h in hooks:
        h.remove()
    x_in = torch.cat(seen["in"]).double().norm(dim=0)
    x_mid = torch.cat(seen["mid"]).double().norm(dim=0)
    c = 7
    expected = ((mlp.gate_proj.weight[c].abs() + mlp.up_proj.weight[c].abs()).double() * x_in).sum() + (
        mlp.down_proj.weight[:, c].abs().double().sum() * x_mid[c])
    assert get_criterion("wanda-sp").score(ctx).scores[mlp_group(graph, 1, c)] == pytest.approx(float(expected), rel=1e-4)


def test_l2_normalisation_divides_each_parameter_by_its_norm(setup):
    model, graph, ctx = setup
    scores = get_criterion("magnitude", reduce="sum", normalize="l2").score(ctx).scores
    gate, up, down = mlp_weights(model, 0)
    c = 2
    expected = sum(a[idx].sum() / a.norm() for a, idx in (  # sum reduction: elements are |w|
        (gate.abs(), (c,)), (up.abs(), (c,)), (down.abs(), (slice(None), c))))
    assert scores[mlp_group(graph, 0, c)] == pytest.approx(float(expected), rel=1e-5)


def test_every_kind_gets_a_score(setup):
    model, graph, ctx = setup
    for name in CRITERIA:
        if (name.startswith("lora-") or name == "lhspg") and not hasattr(model, "peft_config"):
            continue  # they read LoRA's BA; without it they refuse (test_lora_criteria)
        scores = get_criterion(name).score(ctx).scores
        assert set(scores) == set(range(len(graph.groups)))
        assert all(v == v for v in scores.values())  # no NaN
        per_kind = {g.kind for i, g in enumerate(graph.groups) if scores[i] != 0}
        assert per_kind == set(KINDS), name


def test_unknown_criterion_and_option_are_clear_errors():
    with pytest.raises(LorashearError, match="unknown criterion 'nope'; choose from"):
        get_criterion("nope")
    with pytest.raises(LorashearError, match="has no option colour; its options are"):
        get_criterion("taylor", colour="red")
    with pytest.raises(LorashearError, match="variant must be one of"):
        get_criterion("taylor", variant="second")
    with pytest.raises(LorashearError, match="reduce must be one of"):
        get_criterion("magnitude", reduce="max")


def test_data_criteria_need_batches(setup):
    model, graph, _ = setup
    with pytest.raises(LorashearError, match="needs calibration data"):
        get_criterion("taylor").score(ScoreContext(model, graph))


def test_string_options_are_converted():
    assert get_criterion("taylor", variant="vector").per_channel_abs()
    assert get_criterion("magnitude", normalize="l2").normalize == "l2"


def test_wanda_sp_scores_a_tied_lm_head_under_the_embedding_name():
    """A tied lm_head is a linear layer reading the hidden channels: its |W|·‖X‖ must count (once) for the
    hidden-channel groups, exactly as in the same model with the head untied."""
    tied = tiny_model("llama", tie_word_embeddings=True)
    untied = tiny_model("llama", tie_word_embeddings=False)
    state = tied.state_dict()
    untied.load_state_dict({**state, "lm_head.weight": state["model.embed_tokens.weight"].clone()})
    scores = []
    for model in (tied, untied):
        graph = build_graph(model, ("hidden_channel",))
        ctx = ScoreContext(model, graph, BATCHES, batch_size=4, aliases=tied_aliases(model))
        result = get_criterion("wanda-sp").score(ctx).scores
        scores.append([result[i] for i in range(len(graph.groups))])
    assert tied_aliases(tied) and scores[0] == pytest.approx(scores[1], rel=1e-5)


def test_dora_adapters_are_refused_with_advice():
    """DoRA's weight is m·(W + s·BA)/‖W + s·BA‖, not W + s·BA: scoring it as LoRA would be silently wrong."""
    from peft import LoraConfig, get_peft_model

    from lorashear.importance import effective_weights

    model = get_peft_model(tiny_model("llama"), LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    with pytest.raises(LorashearError, match="DoRA adapter.*merge_and_unload"):
        build_graph(model, ("kv_group",))
    with pytest.raises(LorashearError, match="DoRA adapter.*merge_and_unload"):
        list(effective_weights(model))


def test_scored_parameters_are_the_models_own_weights_a_tied_one_once():
    """ScoreContext.scored_parameters: every base weight a wanted group slices, as the model's Parameter
    objects (so .grad lands on the model), sorted by name; a tied lm_head is the embedding, listed once."""
    model = tiny_model("llama", lora=True, tie_word_embeddings=True)
    graph = build_graph(model, KINDS)
    ctx = ScoreContext(model, graph, kinds=("hidden_channel",))
    got = ctx.scored_parameters()
    params = dict(model.named_parameters())
    assert list(got) == sorted(got) and all(got[n] is params[n] for n in got)
    assert not any(".lora_" in n for n in got)
    embeddings = [n for n in got if n.endswith("embed_tokens.weight")]
    assert len(embeddings) == 1 and not any(n.endswith("lm_head.weight") for n in got)
    assert set(got) == {n for n in ctx.scored_params() if n in params}


@pytest.mark.parametrize("options", [{"variant": "vector"}, {"normalize": "l2"}, {"reduce": "mean"}])
def test_taylor_folded_at_each_gradient_equals_scoring_whole_gradients(setup, options):
    """The calibration path folds each weight's w·g into channel sums as its gradient completes: the scores equal
    those of the whole gradients handed over (the path LHSPG's training steps take), for every form."""
    from dataclasses import replace

    from lorashear.importance.taylor import accumulate_gradients

    model, graph, ctx = setup
    grads = accumulate_gradients(model, BATCHES, ctx.scored_params(), batch_size=4)
    taylor = get_criterion("taylor", **options)
    given = taylor.score(replace(ctx, batches=None, gradients=grads, memo={})).scores
    assert taylor.score(replace(ctx, memo={})).scores == pytest.approx(given, rel=1e-6)


def test_taylor_frees_each_gradient_once_folded(setup, monkeypatch):
    """No weight's gradient outlives its fold: when a weight is folded, every weight folded before it has no
    `.grad` left, and none is kept after scoring (no float32 copy of the gradients is ever built)."""
    import lorashear.importance.taylor as taylor_module

    model, graph, ctx = setup
    params = dict(model.named_parameters())
    folded_names, alive_after = [], []
    real = taylor_module.fold_gradients

    def spy(model_, batches, names, fold, batch_size=4):
        def watching(name, weight, grad):
            alive_after.append([n for n in folded_names if params[n].grad is not None])
            folded_names.append(name)
            return fold(name, weight, grad)

        return real(model_, batches, names, watching, batch_size)

    monkeypatch.setattr(taylor_module, "fold_gradients", spy)
    get_criterion("taylor").score(ctx)
    assert len(folded_names) == len(ctx.scored_parameters()) and all(not alive for alive in alive_after)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("normalize", ["none", "l2"])
@pytest.mark.parametrize("channel_abs", [False, True])
def test_channel_sums_by_blocks_of_rows_equal_the_whole_parameter(monkeypatch, normalize, channel_abs):
    """A parameter's channel sums taken a few rows at a time (no parameter-sized temporary) equal the sums of the
    whole tensor, for row and column channels, L2-normalised or not, made absolute per channel or not."""
    import numpy as np

    import lorashear.importance.base as base

    elements = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    whole = elements / elements.double().norm() if normalize == "l2" else elements.double()
    expected = {0: whole.double().sum(1).numpy(), 1: whole.double().sum(0).numpy()}
    expected = {d: np.abs(v) if channel_abs else v for d, v in expected.items()}
    monkeypatch.setattr(base, "ROW_BLOCK_ELEMENTS", 10)  # two rows a block, the last block one row
    got = base.channel_sums(elements, [0, 1], normalize, channel_abs)
    for d in (0, 1):
        np.testing.assert_allclose(got.sums[d], expected[d], rtol=1e-6, atol=1e-9)
    assert got.per_channel == {0: 5, 1: 7}


def test_taylor_folded_a_row_at_a_time_equals_whole_weights(setup, monkeypatch):
    """The calibration fold reads w·g a block of rows at a time: one row a block gives the same scores."""
    import lorashear.importance.base as base

    model, graph, ctx = setup
    whole = get_criterion("taylor").score(ctx).scores
    monkeypatch.setattr(base, "ROW_BLOCK_ELEMENTS", 1)
    assert get_criterion("taylor").score(ctx).scores == pytest.approx(whole, rel=1e-6)
