"""Group scores and edits on FSDP-sharded weights equal the same on whole weights: two gloo CPU processes, each
holding half the rows of every tensor (`train.sharding.shard`), score groups by LoRAPrune's `lora-grad` from the
step's gradients, then project, zero, fade and merge many groups at once; scores, zeroed groups and the gathered
tensors must equal one process's on the unsharded model (same waves, sums added across processes)."""

from __future__ import annotations

import copy
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lhspg_material import KINDS, adamw, graph_of, lora_model, train_step

from lorashear import distributed
from lorashear.importance import ScoreContext, get_criterion
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


def _step_and_score(model, graph, optimizer) -> dict[int, float]:
    """One training step (batch drawn from a fixed seed); lora-grad scores from its gradients before the optimizer moves."""
    scores = {}

    def score() -> None:
        ctx = ScoreContext(model, graph, kinds=KINDS)
        scores.update(get_criterion("lora-grad", gradients="present").score(ctx).scores)

    torch.manual_seed(1)
    train_step(model, optimizer, before_optimizer_step=score)
    return scores


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
        expected_scores = _step_and_score(whole, graph, whole_optimizer)
        expected_zeroed = _edit(whole, graph, whole_optimizer)

        sharding.shard(model, torch.device("cpu"))
        optimizer = adamw(model)
        # the same step: both processes see the one batch, so the averaged gradients are the single process's
        scores = _step_and_score(model, graph, optimizer)
        zeroed = _edit(model, graph, optimizer)
        worst = 0.0
        params = dict(whole.named_parameters())
        for name, p in model.named_parameters():
            full = distributed.full_tensor(p.detach())
            worst = max(worst, float((full - params[name].detach()).abs().max()))
        if rank == 0:
            torch.save({"worst": worst, "zeroed": zeroed, "expected": expected_zeroed, "scores": scores,
                        "expected_scores": expected_scores,
                        "groups": len(range(0, len(graph.groups), 3))}, out)
    finally:
        dist.destroy_process_group()


def test_sharded_group_scores_and_edits_equal_whole_weight_ones(tmp_path):
    out = str(tmp_path / "result.pt")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    result = torch.load(out)
    assert result["zeroed"] == result["expected"] and 0 < len(result["zeroed"]) < result["groups"]
    assert result["worst"] < 1e-6, result["worst"]
    expected, scores = result["expected_scores"], result["scores"]
    assert scores.keys() == expected.keys() and len(scores) > 50
    assert all(abs(scores[i] - expected[i]) <= 1e-5 * abs(expected[i]) + 1e-9 for i in scores)
