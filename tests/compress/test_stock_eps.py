"""`norm_eps="stock"`: a plain folder where only the shared norm eps prevents one, its error as stated."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from tiny_models import single_thread, tiny_model  # noqa: F401
from transformers import AutoModelForCausalLM

from lorashear.compress import compress, count_params, export
from lorashear.compress.export import stock_eps_scale
from lorashear.graph import HIDDEN_CHANNEL, KV_GROUP, build_graph
from lorashear.pruned.modeling_lorashear import is_rms_norm, norm_eps_attr

IDS = torch.randint(1, 100, (2, 9), generator=torch.Generator().manual_seed(1))
# (architecture, kind removed uniformly): q/k norms with the hidden norms' eps, OLMo2's over all heads.
CASES = [("qwen3", HIDDEN_CHANNEL), ("gemma3_text", HIDDEN_CHANNEL), ("olmo2", HIDDEN_CHANNEL), ("olmo2", KV_GROUP)]


def pruned_model(arch: str, kind: str, eps: float):
    """A tiny model with `eps`, compressed by 4 hidden channels (or one KV group per layer), and its groups."""
    model = tiny_model(arch, rms_norm_eps=eps)
    graph = build_graph(model, kinds=(kind,))
    groups = graph.of_kind(kind)[:4] if kind == HIDDEN_CHANNEL else [
        next(g for g in graph.of_kind(kind) if g.layer == layer) for layer in (0, 1)]
    return model, compress(copy.deepcopy(model), groups), groups


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


@pytest.mark.parametrize("arch,kind", CASES)
def test_stock_eps_export_is_plain_and_each_norm_within_its_bound(arch, kind, tmp_path):
    """The exact export needs remote code; the stock one loads with stock transformers, and every norm that
    kept eps instead of eps·d/d′ scales its output by exactly `stock_eps_scale` (≥ 1, ≤ sqrt(d/d′))."""
    eps = 0.05  # large, so the changed eps is visible in the outputs
    model, pruned, groups = pruned_model(arch, kind, eps)
    exact = export(pruned, None, tmp_path / "exact", groups, count_params(model))
    assert json.loads((exact / "pruning.json").read_text())["norm_eps"] == {"mode": "exact"}
    assert (exact / "modeling_lorashear.py").exists()

    folder = export(pruned, None, tmp_path / "stock", groups, count_params(model), norm_eps="stock")
    record = json.loads((folder / "pruning.json").read_text())
    assert record["plain"] and not (folder / "modeling_lorashear.py").exists()
    assert record["norm_eps"]["mode"] == "stock" and record["norm_eps"]["rms_norm_eps"] == eps
    stock = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert stock.config.rms_norm_eps == eps
    live = {n: getattr(m, norm_eps_attr(m)) for n, m in pruned.named_modules() if is_rms_norm(m) and norm_eps_attr(m)}
    changed = {n: e for n, e in live.items() if not math.isclose(e, eps)}
    assert record["norm_eps"]["norms_changed"] == len(changed) > 0
    assert all(getattr(pruned.get_submodule(n), norm_eps_attr(pruned.get_submodule(n))) == e for n, e in live.items())

    checked = []

    def check(module, args, out, name):
        ratio = changed[name] / eps  # d/d′
        x = args[0].float()
        with torch.no_grad():
            setattr(module, norm_eps_attr(module), changed[name])
            want = module.forward(args[0]).float()  # forward: not through this hook again
            setattr(module, norm_eps_attr(module), eps)
        mean_square = x.pow(2).mean(-1, keepdim=True) / ratio  # over the d original channels (removed ones zero)
        scale = torch.tensor([[stock_eps_scale(eps, ratio, m.item())] for m in mean_square.reshape(-1)])
        scale = scale.reshape(mean_square.shape)
        torch.testing.assert_close(out.float(), want * scale, rtol=1e-4, atol=1e-5)
        assert (scale >= 1).all() and (scale <= math.sqrt(ratio) + 1e-6).all()
        checked.append(name)

    for name in changed:
        stock.get_submodule(name).register_forward_hook(lambda m, a, o, name=name: check(m, a, o, name))
    delta = (logits(stock) - logits(pruned)).abs().max().item()
    assert sorted(set(checked)) == sorted(changed)
    if kind == HIDDEN_CHANNEL:  # every layer's norms changed: visible in the logits (q/k norms barely move
        assert delta > 1e-3     # the near-uniform attention of a random model)


def test_stock_eps_error_is_negligible_at_real_eps(tmp_path):
    """At Qwen3's own eps (1e-6) the stock folder's logits equal the exact model's to float precision: its norms
    see the residual stream. (Gemma 3's and OLMo2's post-norms see a random sublayer's output, mean square
    ~1e-6 ≈ eps, where the bound allows up to sqrt(d/d′); a trained Gemma 3 is measured by
    benchmarks/real_models.py.)"""
    model, pruned, groups = pruned_model("qwen3", HIDDEN_CHANNEL, 1e-6)
    folder = export(pruned, None, tmp_path / "stock", groups, count_params(model), norm_eps="stock")
    stock = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert (logits(stock) - logits(pruned)).abs().max().item() <= 1e-4


def test_stock_eps_leaves_plain_and_remote_only_cases_alone(tmp_path):
    """A folder plain without it records eps exact; one whose layers differ stays remote code, exact."""
    model, pruned, groups = pruned_model("llama", KV_GROUP, 1e-5)
    folder = export(pruned, None, tmp_path / "plain", groups, count_params(model), norm_eps="stock")
    record = json.loads((folder / "pruning.json").read_text())
    assert record["plain"] and record["norm_eps"] == {"mode": "exact"}
    graph = build_graph(model, kinds=(HIDDEN_CHANNEL, "mlp_channel"))
    uneven = graph.of_kind(HIDDEN_CHANNEL)[:4] + [g for g in graph.of_kind("mlp_channel") if g.layer == 0][:3]
    folder = export(compress(copy.deepcopy(model), uneven), None, tmp_path / "uneven", uneven, count_params(model),
                    norm_eps="stock")
    record = json.loads((folder / "pruning.json").read_text())
    assert not record["plain"] and record["norm_eps"] == {"mode": "exact"}
    with pytest.raises(Exception, match="norm_eps must be one of exact, stock"):
        export(pruned, None, tmp_path / "bad", groups, count_params(model), norm_eps="approx")


def test_stock_eps_scale_bounds():
    assert stock_eps_scale(1e-6, 1.25, 1.0) == pytest.approx(1 + 1e-6 * 0.2 / 2, rel=1e-9)
    assert stock_eps_scale(1.0, 4.0, 0.0) == pytest.approx(2.0)  # no signal: sqrt(d/d′)
    assert stock_eps_scale(0.1, 1.0, 0.3) == 1.0  # nothing removed
