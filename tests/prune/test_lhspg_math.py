"""LHSPG's math against hand computations: projection, half-space test, λ rules, fade, absorb, merge."""

from __future__ import annotations

import pytest
import torch
from lhspg_material import adamw, graph_of, group, logits, lora_model, train_step
from tiny_models import single_thread  # noqa: F401

from lorashear.errors import LorashearError
from lorashear.graph.structures import Group, Slice
from lorashear.prune.lhspg import GroupVariables, LhspgConfig, Schedule, fade, merge_lora, project, step_size
from lorashear.prune.lhspg.step import fade_many, project_many


@pytest.fixture(scope="module")
def llama():
    model = lora_model()
    return model, graph_of(model)


def fresh(llama):
    """A private copy of the module's model (tests edit weights) and an AdamW with state after one step."""
    import copy

    model = copy.deepcopy(llama[0])
    optimizer = adamw(model)
    train_step(model, optimizer)
    return model, optimizer


def mlp_parts(model, layer: int, c: int):
    """Channel c of layer's MLP by hand: (x pieces, s·BA pieces, own LoRA slices)."""
    mlp = model.base_model.model.model.layers[layer].mlp
    xs, us, own = [], [], []
    for name in ("gate_proj", "up_proj"):
        m = getattr(mlp, name)
        a, b, s = m.lora_A["default"].weight, m.lora_B["default"].weight, m.scaling["default"]
        xs.append(m.base_layer.weight[c].detach().clone())
        us.append((s * b[c] @ a).detach())
        own.append((b, (c,)))
    m = mlp.down_proj
    a, b, s = m.lora_A["default"].weight, m.lora_B["default"].weight, m.scaling["default"]
    xs.append(m.base_layer.weight[:, c].detach().clone())
    us.append((s * b @ a[:, c]).detach())
    own.append((a, (slice(None), c)))
    return xs, us, own


def test_projection_step_matches_hand_computation(llama):
    model, optimizer = fresh(llama)
    graph = llama[1]
    i, c = group(graph, "mlp_channel", 1, 3), 3
    xs, us, own = mlp_parts(model, 1, c)
    x_norm = torch.cat([x.flatten() for x in xs]).norm()
    lam = 0.3 * float(x_norm)
    expected = [x + u - lam * x / x_norm for x, u in zip(xs, us, strict=True)]
    variables = GroupVariables(model, {i: graph.groups[i]})
    assert not project(variables, i, lam, 0.0, optimizer)
    got = variables.values(i)
    assert [g.numel() for g in got] == [e.numel() for e in expected]
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g.flatten(), e.flatten(), rtol=1e-5, atol=1e-6)
    for param, index in own:  # LoRA slices and their Adam moments: exactly zero
        assert not param[index].any()
        assert not optimizer.state[param]["exp_avg"][index].any()
        assert not optimizer.state[param]["exp_avg_sq"][index].any()
        assert optimizer.state[param]["exp_avg"].any()  # other rows untouched


def test_half_space_test_zeroes_the_group(llama):
    model, optimizer = fresh(llama)
    graph = llama[1]
    i = group(graph, "mlp_channel", 0, 5)
    variables = GroupVariables(model, {i: graph.groups[i]})
    x = variables.values(i)
    x_norm = float(torch.cat([v.flatten() for v in x]).norm())
    # ε = 0.5: a step that keeps x̃ᵀx just under ‖x‖²/2 zeroes the group; one just over keeps it
    inner = x_norm**2 + sum(float((v * u).sum()) for v, u in zip(x, variables.lora_update(i), strict=True))
    keep = (inner - 0.5 * x_norm**2) / x_norm * 0.99
    saved = [v.clone() for v in x]
    assert not project(variables, i, keep, 0.5, optimizer)
    variables.write(i, saved)  # its LoRA slices are absorbed now: x̃ᵀx = ‖x‖² − λ‖x‖, the threshold is λ = ‖x‖/2
    assert not project(variables, i, 0.49 * x_norm, 0.5, optimizer)
    variables.write(i, saved)
    assert project(variables, i, 0.51 * x_norm, 0.5, optimizer)
    assert variables.is_zero(i)
    assert project(variables, i, 0.0, 0.0, optimizer)  # zeros stay zero


def test_lambda_rules_and_fade_by_hand():
    assert step_size("remaining", 6.0, 9.0, 1, 4) == pytest.approx(2.0)
    assert step_size("constant", 6.0, 8.0, 1, 4) == pytest.approx(2.0)
    assert step_size("remaining", 5.0, 9.0, 3, 4) == pytest.approx(5.0)  # the last step lands on zero


def test_fade_multiplies_base_and_lora_slices(llama):
    model, _ = fresh(llama)
    graph = llama[1]
    i, c = group(graph, "mlp_channel", 1, 2), 2
    xs, _, own = mlp_parts(model, 1, c)
    before = [p[ix].detach().clone() for p, ix in own]
    variables = GroupVariables(model, {i: graph.groups[i]})
    fade(variables, i, 1, 4)  # factor (4-1-1)/(4-1)
    for got, x in zip(variables.values(i), xs, strict=True):
        torch.testing.assert_close(got.flatten(), x.flatten() * 2 / 3)
    for (p, ix), b in zip(own, before, strict=True):
        torch.testing.assert_close(p[ix], b * 2 / 3)
    fade(variables, i, 3, 4)
    assert variables.is_zero(i)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_absorb_and_zero_leave_the_function_unchanged(model_type, llama):
    """λ = 0: x_g takes s·BA_g and the group's LoRA slices go; no other element's function changes."""
    model, graph = llama if model_type == "llama" else (lambda m: (m, graph_of(m)))(lora_model("gpt2"))
    model, optimizer = fresh((model, graph))
    before = logits(model)
    chosen = [group(graph, "hidden_channel", None, 3), group(graph, "mlp_channel", 0, 1)]
    if model_type == "llama":
        chosen.append(group(graph, "kv_group", 1, 0))
    variables = GroupVariables(model, {i: graph.groups[i] for i in chosen})
    for i in chosen:
        assert not project(variables, i, 0.0, float("-inf"), optimizer)
        assert variables.lora_slices(i) and all(not p[ix].any() for p, ix in variables.lora_slices(i))
    torch.testing.assert_close(logits(model), before, rtol=1e-4, atol=1e-5)


def test_rows_and_columns_of_one_matrix_are_one_variable(llama):
    model, optimizer = fresh(llama)
    name = next(s.param for s in llama[1].groups[0].slices if "q_proj.base_layer" in s.param)
    odd = Group("test", 0, [Slice(name, 0, (0, 1, 2)), Slice(name, 1, (1, 2, 5))])
    before = logits(model)
    weight = dict(model.named_parameters())[name]
    variables = GroupVariables(model, {0: odd})
    expected_count = 3 * weight.shape[1] + (weight.shape[0] - 3) * 3  # W[R, :] and W[not R, C]: overlap once
    assert sum(v.numel() for v in variables.values(0)) == expected_count
    project(variables, 0, 0.0, float("-inf"), optimizer)
    torch.testing.assert_close(logits(model), before, rtol=1e-4, atol=1e-5)
    variables.zero(0, optimizer)
    assert not weight[[0, 1, 2]].any() and not weight[:, [1, 2, 5]].any()


def test_merge_leaves_logits_unchanged_and_restarts_lora(llama):
    model, optimizer = fresh(llama)
    before = logits(model)
    assert merge_lora(model, optimizer) > 0
    torch.testing.assert_close(logits(model), before, rtol=1e-4, atol=1e-5)
    bs = [p for n, p in model.named_parameters() if ".lora_B." in n]
    assert bs and all(not b.any() for b in bs) and all(b not in optimizer.state for b in bs)


def test_schedule_plan_and_positions():
    s = Schedule.plan(14, 0.25, 3)
    assert (s.warmup_steps, s.period_steps) == (4, 3)  # round(3.5) = 4; (14 - 4) // 3 = 3, one step left over
    assert [s.position(k) for k in (3, 4, 6, 7, 12, 13)] == [None, (0, 0), (0, 2), (1, 0), (2, 2), None]
    with pytest.raises(LorashearError, match="at least one step per period"):
        Schedule.plan(4, 0.5, 3)


@pytest.mark.parametrize("bad", [dict(warmup_share=1.0), dict(periods=0), dict(epsilon=-0.1),
                                 dict(lambda_rule="fast"), dict(variant="x"), dict(merge="never"),
                                 dict(saliency="nope"), dict(saliency_options={"weights": "nope:1"}),
                                 dict(saliency_samples=0), dict(saliency_samples=2.5),
                                 dict(saliency_steps=0), dict(saliency_steps=2, saliency="lhspg"),
                                 dict(saliency_steps=2, saliency_samples=4)])
def test_config_refuses_bad_values(bad):
    with pytest.raises(LorashearError):
        LhspgConfig(**bad)


def test_zero_lora_many_equals_zero_lora_group_by_group(llama):
    """The per-step "zeros stay zero" write, batched per factor: the same LoRA slices and Adam moments."""
    graph = llama[1]
    chosen = [group(graph, "mlp_channel", 1, 0), group(graph, "mlp_channel", 1, 5), group(graph, "kv_group", 0, 1),
              group(graph, "hidden_channel", None, 2)]
    copies = []
    for _ in range(2):
        torch.manual_seed(0)  # the same batch and dropout: two equal trained copies
        copies.append(fresh(llama))
    (one, opt_one), (many, opt_many) = copies
    for i in chosen:
        GroupVariables(one, {i: graph.groups[i]}).zero_lora(i, opt_one)
    GroupVariables(many, {i: graph.groups[i] for i in chosen}).zero_lora_many(chosen, opt_many)
    for (name, p), q in zip(one.named_parameters(), many.parameters(), strict=True):
        assert torch.equal(p, q), name
        for key in ("exp_avg", "exp_avg_sq"):
            if p in opt_one.state:
                assert torch.equal(opt_one.state[p][key], opt_many.state[q][key]), name
    assert any(not torch.equal(p, q) for p, q in zip(llama[0].parameters(), many.parameters(), strict=True))


def reference_project(variables: GroupVariables, i: int, lam: float, epsilon: float, optimizer) -> bool:
    """Algorithm 4's step on one group, piece by piece (the form `project_many` batches)."""
    x = variables.values(i)
    x_norm = float(torch.stack([v.double().pow(2).sum() for v in x]).sum().sqrt())
    if x_norm == 0.0:
        variables.zero_lora(i, optimizer)
        return True
    trial = [xk + uk - (lam / x_norm) * xk for xk, uk in zip(x, variables.lora_update(i), strict=True)]
    if sum(float((t.double() * v.double()).sum()) for t, v in zip(trial, x, strict=True)) < epsilon * x_norm**2:
        variables.zero(i, optimizer)
        return True
    variables.write(i, trial)
    variables.zero_lora(i, optimizer)
    return False


def assert_same_state(one, opt_one, many, opt_many) -> None:
    for (name, p), q in zip(one.named_parameters(), many.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
        for key in ("exp_avg", "exp_avg_sq"):
            if p in opt_one.state:
                torch.testing.assert_close(opt_one.state[p][key], opt_many.state[q][key], msg=name)


@pytest.mark.parametrize("chunk", [None, 1])
@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_batched_steps_equal_group_by_group_steps(model_type, chunk, llama, monkeypatch):
    """project_many / fade_many / zero_many equal the per-group forms applied in index order, also for groups that
    share elements (a hidden channel's columns and a KV group's or MLP channel's rows of one matrix), whether the
    groups are processed all at once or one chunk (here: one group) at a time."""
    if chunk is not None:
        monkeypatch.setattr("lorashear.prune.lhspg.step.CHUNK_ELEMENTS", chunk)
    base, graph = llama if model_type == "llama" else (lambda m: (m, graph_of(m)))(lora_model("gpt2"))
    kinds = ["hidden_channel", "mlp_channel", "mlp_channel"] + (["kv_group"] if model_type == "llama" else [])
    chosen = sorted({group(graph, "hidden_channel", None, 3), group(graph, "mlp_channel", 0, 1),
                     group(graph, "mlp_channel", 1, 4), group(graph, "mlp_channel", 1, 6)}
                    | ({group(graph, "kv_group", 1, 0)} if "kv_group" in kinds else set()))
    shrink = {i: 0.3 for i in chosen} | {chosen[-1]: 1.5}  # the last one fails the half-space test
    copies = []
    for _ in range(2):
        torch.manual_seed(0)  # the same batch and dropout: two equal trained copies
        copies.append(fresh((base, graph)))
    (one, opt_one), (many, opt_many) = copies
    ref = GroupVariables(one, {i: graph.groups[i] for i in chosen})
    got = GroupVariables(many, {i: graph.groups[i] for i in chosen})
    assert len(got.waves(chosen)) > 1  # the hidden channel shares elements with the others
    for i in chosen:
        lam = shrink[i] * float(torch.cat([v.double().flatten() for v in ref.values(i)]).norm())
        reference_project(ref, i, lam, 0.0, opt_one)
    zeroed = project_many(got, chosen, lambda wave, norms: norms * torch.tensor([shrink[i] for i in wave],
                                                                                 dtype=norms.dtype), 0.0, opt_many)
    assert zeroed == [chosen[-1]]
    assert_same_state(one, opt_one, many, opt_many)
    for i in chosen:
        fade(ref, i, 1, 4)
    fade_many(got, chosen, 1, 4)
    assert_same_state(one, opt_one, many, opt_many)
    for i in chosen:
        ref.zero(i, opt_one)
    got.zero_many(chosen, opt_many)
    assert_same_state(one, opt_one, many, opt_many)
    assert all(got.is_zero(i) for i in chosen)
