"""`sharding.load_sharded` of a lorashear-pruned folder (per-layer widths) across two gloo CPU processes: the gathered
weights are the folder's, and LoRA starts where peft starts it in one process with the same seed."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from launch import free_port
from tiny_models import tiny_model

from lorashear import distributed
from lorashear.models import load_model
from lorashear.prune.api import PruneConfig, prune_model
from lorashear.train import sharding
from lorashear.train.config import LoopConfig
from lorashear.train.lora import add_lora


def _worker(rank: int, world: int, port: int, folder: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        config = LoopConfig(lora_r=4)
        torch.manual_seed(5)
        whole = add_lora(load_model(folder, device="cpu"), config)
        torch.manual_seed(5)
        model = sharding.load_sharded(folder, torch.device("cpu"), torch.float32,
                                      attach_lora=lambda base: add_lora(base, config))
        expected = dict(whole.named_parameters())
        names, worst = [], 0.0
        for name, p in model.named_parameters():
            names.append(name)
            assert distributed.is_dtensor(p), name
            worst = max(worst, float((distributed.full_tensor(p.detach()) - expected[name].detach()).abs().max()))
        if rank == 0:
            torch.save({"worst": worst, "names": names, "expected": list(expected)}, out)
    finally:
        dist.destroy_process_group()


def test_a_pruned_folder_loads_sharded_as_it_loads_whole(tmp_path):
    source = tmp_path / "dense"
    tiny_model("llama", num_hidden_layers=4).save_pretrained(source)
    pruned = prune_model(PruneConfig(str(source), str(tmp_path / "pruned"), method="random", ratio=0.3,
                                     kinds=("kv_group", "mlp_channel")), log=lambda _: None)
    widths = {tuple(p.shape) for n, p in load_model(str(pruned.folder), device="cpu").named_parameters()
              if n.endswith("mlp.down_proj.weight")}
    assert len(widths) > 1  # per-layer widths: the pruned layout, not the stock one
    out = str(tmp_path / "result.pt")
    mp.spawn(_worker, args=(2, free_port(), str(pruned.folder), out), nprocs=2, join=True)
    result = torch.load(out)
    assert result["names"] == result["expected"]
    assert result["worst"] == 0.0
