"""The LoRA pieces every trained stage shares: the exact merge and gradient checkpointing."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_models import single_thread, tiny_model, with_random_lora  # noqa: F401

from lorashear.models import merge_lora
from lorashear.train.lora import use_gradient_checkpointing

IDS = torch.randint(3, 120, (2, 12), generator=torch.Generator().manual_seed(0))


def lora_model(dtype: torch.dtype):
    """A tiny llama with random (non-zero) float32 LoRA factors on a base in `dtype`."""
    return with_random_lora(tiny_model("llama").to(dtype))


def test_float32_merge_equals_peft_merge_exactly():
    model = lora_model(torch.float32)
    ours = merge_lora(copy.deepcopy(model)).state_dict()
    peft = copy.deepcopy(model).merge_and_unload().state_dict()
    assert ours.keys() == peft.keys() and all(torch.equal(ours[k], peft[k]) for k in ours)


def test_bfloat16_merge_is_the_float32_merge_rounded_once():
    """W ← round_bf16(W + s·BA), the sum in float32: never a second rounding of s·BA in bfloat16."""
    model = lora_model(torch.bfloat16)
    for module in model.modules():  # LoRA factors stay float32 as peft keeps them on a bf16 base
        if hasattr(module, "lora_A"):
            assert module.lora_A["default"].weight.dtype == torch.float32
    wide = copy.deepcopy(model)
    wide.get_base_model().to(torch.float32)
    expected = {k: v.to(torch.bfloat16) for k, v in merge_lora(wide).state_dict().items()}
    merged = merge_lora(model)
    state = merged.state_dict()
    assert all(t.dtype == torch.bfloat16 for t in state.values())
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert not any(".lora_" in name for name in state)  # the adapters are gone


@pytest.mark.parametrize("setting, on", [("auto", False), ("true", True), ("false", False)])
def test_gradient_checkpointing_setting(setting, on):
    """auto: on only from 1B parameters (a tiny model: off); a checkpointed step's loss and LoRA gradients
    equal the plain step's."""
    plain = lora_model(torch.float32)
    checked = copy.deepcopy(plain)
    assert use_gradient_checkpointing(checked, setting) is on
    assert checked.get_base_model().is_activation_checkpointing is on
    grads = []
    for model in (plain, checked):
        model.train()
        loss = model(input_ids=IDS, labels=IDS).loss
        loss.backward()
        grads.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}))
    (loss_a, grads_a), (loss_b, grads_b) = grads
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and all(torch.allclose(grads_a[k], grads_b[k], atol=1e-6)
                                                    for k in grads_a)


def test_gradient_checkpointing_auto_counts_the_base_parameters(monkeypatch):
    import lorashear.train.lora as lora_module

    monkeypatch.setattr(lora_module, "CHECKPOINTING_FROM", 1000)
    assert use_gradient_checkpointing(lora_model(torch.float32), "auto")
