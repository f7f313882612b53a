"""Group edits on FSDP-sharded weights equal the same edits on whole weights: two gloo CPU processes, each holding
half the rows of every tensor (`train.sharding.shard`), project, zero, fade and merge many groups at once; the
gathered tensors must equal one process's edit of the unsharded model (same waves, sums reduced across processes)."""

from __future__ import annotations

import copy
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lhspg_material import adamw, graph_of, lora_model, train_step

from lorashear.prune.lhspg.step import fade_many, merge_lora, project_many
from lorashear.prune.variables import GroupVariables
from lorashear.train import sharding


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _edit(model, graph, optimizer) -> list[int]:
    """Every kind of group edit, on many groups at once (rows and columns of shared tensors, LoRA, moments)."""
    groups = {i: g for i, g in enumerate(graph.groups) if i % 3 == 0}
    variables = GroupVariables(model, groups)
    chosen = sorted(groups)
    # λ fixed: each group's shrink λ/‖x_g‖ needs the norm over every process's rows; ε: some groups fail the test
    zeroed = project_many(variables, chosen, lambda wave, norms: torch.full_like(norms, 0.2), 0.3, optimizer)
    fade_many(variables, chosen[1::2], 2, 5)
    variables.zero_many(chosen[:4], optimizer)
    merge_lora(model, optimizer)
    return zeroed


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = lora_model()
        with torch.no_grad():  # LoRA that has trained: B non-zero, so s·BA matters
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
        graph = graph_of(model)
        whole = copy.deepcopy(model)
        whole_optimizer = adamw(whole)
        train_step(whole, whole_optimizer)
        expected_zeroed = _edit(whole, graph, whole_optimizer)

        sharding.shard(model, torch.device("cpu"))
        optimizer = adamw(model)
        train_step(model, optimizer)  # the same step: both processes see the same batch, so the grads are equal
        zeroed = _edit(model, graph, optimizer)
        worst = 0.0
        params = dict(whole.named_parameters())
        for name, p in model.named_parameters():
            full = sharding.full_tensor(p.detach())
            worst = max(worst, float((full - params[name].detach()).abs().max()))
        if rank == 0:
            torch.save({"worst": worst, "zeroed": zeroed, "expected": expected_zeroed,
                        "groups": len(range(0, len(graph.groups), 3))}, out)
    finally:
        dist.destroy_process_group()


def test_sharded_group_edits_equal_whole_weight_edits(tmp_path):
    out = str(tmp_path / "result.pt")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    result = torch.load(out)
    assert result["zeroed"] == result["expected"] and 0 < len(result["zeroed"]) < result["groups"]
    assert result["worst"] < 1e-6, result["worst"]
