"""`lora-grad` (LoRAPrune) against autograd: the LoRA estimate G on a tiny LoRA linear, group sums on a tiny
peft llama, and the two gradient sources (the loop's .grad, calibration batches) agreeing."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from tiny_models import single_thread, tiny_model  # noqa: F401
from torch import nn

from lorashear.errors import LorashearError
from lorashear.graph import build_graph
from lorashear.importance import ScoreContext, get_criterion
from lorashear.prune.api import tied_aliases

KINDS = ("kv_group", "mlp_channel", "hidden_channel")
BATCHES = torch.randint(0, 128, (3, 12), generator=torch.Generator().manual_seed(3))


class Tiny(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(n_in, n_out, bias=False)

    def forward(self, x):
        return self.lin(x)


def lora_linear(n_in=6, n_out=5, r=3, alpha=6, seed=0):
    torch.manual_seed(seed)
    return get_peft_model(Tiny(n_in, n_out), LoraConfig(r=r, lora_alpha=alpha, target_modules=["lin"],
                                                        init_lora_weights=False))


def factors(model):
    layer = model.base_model.model.lin
    return (layer.base_layer.weight.detach(), layer.lora_A["default"].weight, layer.lora_B["default"].weight,
            layer.scaling["default"])


def loss_of(out: torch.Tensor) -> torch.Tensor:
    return (out.sin() * torch.arange(out.numel()).reshape(out.shape)).sum()


X = torch.randn(7, 6, generator=torch.Generator().manual_seed(5))


def criterion_elements(model, **options) -> torch.Tensor:
    """The criterion's element scores (unnormalised) of the tiny linear, from the gradients now in .grad."""
    crit = get_criterion("lora-grad", gradients="present", **options)
    [(name, elements)] = list(crit.elements(ScoreContext(model, graph=None)))
    assert name.endswith("lin.base_layer.weight")
    return elements


def backward(model, x=X) -> None:
    model.zero_grad()
    loss_of(model(x)).backward()


def grads_by_autograd(w, a, b, s):
    """(∇P, ∇W) by autograd: P = BA a leaf of y = (W + s·P)x, and W a leaf of y = W_eff x (W_eff's gradient)."""
    p = (b @ a).detach().requires_grad_()
    loss_of(X @ (w + s * p).T).backward()
    w_eff = (w + s * b @ a).detach().requires_grad_()
    loss_of(X @ w_eff.T).backward()
    return p.grad, w_eff.grad


def test_estimate_is_the_first_order_change_of_the_effective_weight():
    """G = s·(∇B·A + B·∇A) with ∇B = ∇P·Aᵀ, ∇A = Bᵀ·∇P (chain rule through P = BA) and ∇P = s·∇W: exact."""
    model = lora_linear()
    backward(model)
    w, a, b, s = factors(model)
    a, b = a.detach(), b.detach()
    assert s == 2.0
    grad_p, grad_w = grads_by_autograd(w, a, b, s)
    torch.testing.assert_close(grad_p, s * grad_w)
    g = s * (grad_p @ a.T @ a + b @ b.T @ grad_p)
    # the same products in another order: equal up to fp32 rounding, which differs by CPU kernel (an AVX-512/AMX
    # machine put 2.9e-5 between them at values ~14, over the default rtol of 1.3e-6)
    torch.testing.assert_close(g, s * s * (grad_w @ a.T @ a + b @ b.T @ grad_w), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(criterion_elements(model), (g * (w + s * b @ a)).abs(), rtol=1e-5, atol=1e-5)


def test_subtracting_the_cross_term_gives_the_change_of_s_ba_after_a_unit_step():
    model = lora_linear(seed=1)
    backward(model)
    w, a, b, s = factors(model)
    stepped = (b - b.grad) @ (a - a.grad)  # one SGD step of size 1
    g = s * (b @ a - stepped).detach()
    torch.testing.assert_close(criterion_elements(model, subtract_cross=True), (g * (w + s * b @ a)).abs().detach())


def test_full_rank_orthogonal_a_and_zero_b_give_the_weight_gradient_itself():
    """With AᵀA = I, B = 0 and s = 1 the LoRA estimate is ∇W: the score is the Taylor |∇W ⊙ W_eff|."""
    model = lora_linear(n_in=4, n_out=5, r=4, alpha=4)
    w, a, b, s = factors(model)
    with torch.no_grad():
        a.copy_(torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(2)))[0])
        b.zero_()
    backward(model, X[:, :4])
    weight = w.clone().requires_grad_()
    loss_of(X[:, :4] @ weight.T).backward()
    assert s == 1.0
    torch.testing.assert_close(criterion_elements(model), (weight.grad * w).abs())


@pytest.fixture(scope="module")
def llama():
    model = tiny_model("llama", lora=True)
    graph = build_graph(model, KINDS)
    return model, graph, ScoreContext(model, graph, BATCHES, batch_size=4, aliases=tied_aliases(model))


def hand_group_scores(model, graph, indices) -> dict[int, float]:
    """Σ over each group's LoRA-carrying slices of |G ⊙ W_eff| / ‖|G ⊙ W_eff|‖, from .grad, in float64."""
    modules = dict(model.named_modules())
    out = {}
    for i in indices:
        total = 0.0
        for sl in graph.groups[i].slices:
            if not sl.param.endswith(".base_layer.weight"):
                continue  # norms and embeddings carry no LoRA: nothing to add
            layer = modules[sl.param.removesuffix(".base_layer.weight")]
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            w, s = layer.base_layer.weight.detach().double(), layer.scaling["default"]
            g = s * (b.grad.double() @ a.detach().double() + b.detach().double() @ a.grad.double())
            elements = (g * (w + s * b.detach().double() @ a.detach().double())).abs()
            elements = elements / elements.norm()
            total += float(elements[list(sl.index)].sum() if sl.dim == 0 else elements[:, list(sl.index)].sum())
        out[i] = total
    return out


def test_group_sums_on_a_peft_llama_and_both_gradient_sources(llama):
    model, graph, ctx = llama
    params = dict(model.named_parameters())
    frozen = {n for n, p in params.items() if not p.requires_grad}
    scores = get_criterion("lora-grad").score(ctx).scores
    assert all(p.grad is None for p in params.values())  # nothing left behind, no frozen weight ever had one
    assert frozen == {n for n, p in params.items() if not p.requires_grad}
    # the same gradients by hand: one batch of all rows is the mean loss the criterion accumulated
    model.zero_grad()
    model(input_ids=BATCHES, labels=BATCHES).loss.backward()
    assert all(params[n].grad is None for n in frozen)
    chosen = [next(i for i, g in enumerate(graph.groups) if g.kind == kind) for kind in KINDS]
    assert any("norm" in sl.param for sl in graph.groups[chosen[2]].slices)  # a hidden channel holds norm slices
    expected = hand_group_scores(model, graph, chosen)
    assert {i: scores[i] for i in chosen} == pytest.approx(expected, rel=1e-4)
    present = get_criterion("lora-grad", gradients="present").score(ctx).scores
    assert present == pytest.approx(scores, rel=1e-4)
    model.zero_grad()


def test_errors_say_what_to_do(llama):
    model, graph, ctx = llama
    model.zero_grad(set_to_none=True)
    with pytest.raises(LorashearError, match="after backward"):
        get_criterion("lora-grad", gradients="present").score(ctx)
    with pytest.raises(LorashearError, match="gradients must be one of"):
        get_criterion("lora-grad", gradients="loop")
    assert not get_criterion("lora-grad", gradients="present").needs_data and get_criterion("lora-grad").needs_data
    plain = tiny_model("llama")
    plain_ctx = ScoreContext(plain, build_graph(plain, ("mlp_channel",)), BATCHES)
    with pytest.raises(LorashearError, match="no active LoRA adapter"):
        get_criterion("lora-grad").score(plain_ctx)
