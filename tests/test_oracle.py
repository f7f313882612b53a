"""The oracle: removing groups == zeroing them, for every architecture we claim; exports reload to the same."""

from __future__ import annotations

import copy
import json
import random
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from lorashear.compress import compress, count_params, export, load_pruned, removed_indices, zero_groups
from lorashear.graph.structures import HIDDEN_CHANNEL, MLP_BLOCK

sys.path.insert(0, str(Path(__file__).parent / "compress"))
from handmade import hand_groups  # noqa: E402

# (arch, tied embeddings, attention implementation, LoRA)
CASES = [
    ("llama", True, "sdpa", True),
    ("mistral", False, "eager", False),
    ("qwen2", False, "sdpa", True),
    ("qwen3", True, "eager", True),
    ("gemma", True, "sdpa", False),
    ("gemma2", True, "eager", True),
    ("gemma3_text", True, "sdpa", True),
    ("phi3", False, "eager", True),
    ("granite", True, "sdpa", False),
    ("olmo2", False, "sdpa", True),
    ("gpt2", True, "eager", True),
    ("opt", True, "sdpa", False),
]


def tiny_model(arch: str, tied: bool, attn: str, lora: bool) -> nn.Module:
    torch.manual_seed(0)
    if arch == "gpt2":
        kw = dict(n_embd=64, n_layer=2, n_head=4)
    elif arch == "opt":
        kw = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=96, word_embed_proj_dim=64)
    else:
        kw = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=96, head_dim=16)
    config = AutoConfig.for_model(arch, vocab_size=128, pad_token_id=0, tie_word_embeddings=tied, **kw)
    config._attn_implementation = attn
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # non-trivial norms, so that compensation errors show
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    if lora:
        from peft import LoraConfig, get_peft_model

        targets = "all-linear"
        model = get_peft_model(model, LoraConfig(r=4, target_modules=targets, lora_alpha=8))
        with torch.no_grad():  # non-zero lora_B, so that LoRA matters
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1)
        model.eval()
    return model


def pick(groups, rng: random.Random, frac: float = 0.3):
    """A random subset of every kind that never empties a layer of a kind (one group kept per layer)."""
    by_slot: dict = {}
    for g in groups:
        by_slot.setdefault((g.kind, g.layer), []).append(g)
    chosen = []
    for (kind, _layer), gs in by_slot.items():
        if kind == MLP_BLOCK or kind.endswith("_block"):
            continue
        if len(gs) > 1:
            chosen += rng.sample(gs, max(1, int(frac * len(gs))))
    # One whole MLP block (layer 1) and its attention kept: blocks and heads in one model.
    chosen += [g for g in groups if g.kind == MLP_BLOCK and g.layer == 1]
    return chosen


def kept_layernorm_reference(model: nn.Module, groups) -> None:
    """LayerNorms of the zeroed reference computed over the kept hidden channels (what removal does)."""
    hidden = removed_indices([g for g in groups if g.kind == HIDDEN_CHANNEL])
    for name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm):
            key = next((k for k in hidden if k.endswith(name + ".weight")), None)
            if key is None:
                continue
            gone = set(hidden[key][0])
            keep = torch.tensor([i for i in range(module.normalized_shape[0]) if i not in gone])

            def forward(x, module=module, keep=keep):
                out = torch.zeros_like(x)
                out[..., keep] = nn.functional.layer_norm(
                    x[..., keep], (len(keep),), module.weight[keep], module.bias[keep], module.eps
                )
                return out

            module.forward = forward


@pytest.mark.parametrize("arch,tied,attn,lora", CASES, ids=[c[0] for c in CASES])
def test_remove_equals_zero_and_export_reloads(arch, tied, attn, lora, tmp_path):
    model = tiny_model(arch, tied, attn, lora)
    groups = hand_groups(model)
    removed = pick(groups, random.Random(arch))
    assert {g.kind for g in removed} >= {"kv_group", "mlp_channel", "hidden_channel", "mlp_block"}
    x = torch.randint(1, 128, (2, 9))

    reference = copy.deepcopy(model)
    zero_groups(reference, removed)
    kept_layernorm_reference(reference, removed)
    params_before = count_params(model)
    pruned = compress(copy.deepcopy(model), removed)
    with torch.no_grad():
        want = reference(x).logits
        got = pruned(x).logits
    assert (want - got).abs().max().item() <= 1e-4
    assert count_params(pruned) < params_before

    folder = export(pruned, None, tmp_path / "pruned", removed, params_before)
    plan = json.loads((folder / "pruning.json").read_text())
    assert plan["params_before"] == params_before and plan["params_after"] < params_before
    assert len(plan["removed"]) == len(removed)
    reloaded = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=not plan["plain"]).eval()
    with torch.no_grad():
        assert (reloaded(x).logits - want).abs().max().item() <= 1e-4
    cached = reloaded.generate(x, max_new_tokens=6, do_sample=False, use_cache=True)
    uncached = reloaded.generate(x, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    assert (load_pruned(folder)(x).logits - want).abs().max().item() <= 1e-4
