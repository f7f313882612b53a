"""Whole blocks with LoRA attached: the block's group kills the LoRA factors too, so compress drops the module."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_models import model_and_graph, single_thread  # noqa: F401

from lorashear.compress import compress, zero_groups
from lorashear.graph import ATTENTION_BLOCK, MLP_BLOCK
from lorashear.pruned.modeling_lorashear import RemovedAttention, RemovedModule


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@pytest.mark.parametrize("kind", [MLP_BLOCK, ATTENTION_BLOCK])
def test_lora_block_is_removed_whole(model_type, kind):
    model, graph = model_and_graph(model_type, True)
    group = next(g for g in graph.of_kind(kind) if g.layer == 0)
    # Every LoRA factor of the block's projections is listed, whole, never along its rank dim.
    lora = {s.param for s in group.slices if ".lora_" in s.param}
    base = {s.param.split(".base_layer")[0] for s in group.slices if ".base_layer." in s.param}
    assert lora == {f"{b}.lora_{f}.default.weight" for b in base for f in "AB"}
    ids = torch.randint(1, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    reference = copy.deepcopy(model)
    zero_groups(reference, [group])
    pruned = compress(copy.deepcopy(model), [group])
    removed = [m for m in pruned.modules() if isinstance(m, (RemovedAttention, RemovedModule))]
    assert len(removed) == 1
    with torch.no_grad():
        want, got = reference(ids).logits, pruned(ids).logits
    assert (want - got).abs().max().item() <= 1e-5
