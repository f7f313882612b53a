"""Tensors split across processes: which rows a process holds of an FSDP2-sharded tensor (`Shard(0)`, the
placement `lorashear.train.sharding` gives every parameter), reading and writing them there, and adding the
processes' parts of a sum. A plain tensor is its own rows from 0 and sums need no adding, so code written with
these helpers runs the same in one process and in many.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.distributed as dist

from lorashear.errors import LorashearError


def row_range(rows: int, rank: int, world: int) -> tuple[int, int]:
    """The rows [start, end) that process `rank` of `world` holds of a dim-0-sharded tensor of `rows` rows
    (FSDP2: chunks of ceil(rows / world), the last ones shorter or empty)."""
    chunk = math.ceil(rows / world)
    start = min(rank * chunk, rows)
    return start, min(start + chunk, rows)


def local_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """This process's rows of `tensor` (a detached view: writes reach the parameter) and the global index of the
    first; a plain tensor is all its rows from 0."""
    tensor = tensor.detach()  # the same storage, outside autograd (edits of a trainable parameter's values)
    if not is_dtensor(tensor):
        return tensor, 0
    from torch.distributed.tensor import Shard

    if tuple(tensor.placements) != (Shard(0),):
        raise LorashearError(f"a sharded tensor placed as {tensor.placements} (lorashear edits Shard(0) only)")
    mesh = tensor.device_mesh
    start, _ = row_range(tensor.shape[0], mesh.get_local_rank(), mesh.size())
    return tensor.to_local(), start


def is_dtensor(tensor: torch.Tensor) -> bool:
    """Whether `tensor` is a DTensor (without importing torch.distributed.tensor, ~0.5 s, when nothing has: then
    none exists)."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


def local_index(tensor: torch.Tensor, index: tuple) -> tuple[torch.Tensor, tuple]:
    """`tensor[index]`, index global, as (this process's rows, the index into them): `(rows,)` keeps the rows this
    process holds, shifted to its first; `(slice(None), columns)` (every row) stays as it is."""
    local, start = local_rows(tensor)
    if isinstance(index[0], slice) or (start == 0 and local.shape[0] == tensor.shape[0]):
        return local, index
    if len(index) != 1:
        raise ValueError("local_index takes (rows,) or (slice(None), columns)")
    rows = index[0]
    return local, (rows[(rows >= start) & (rows < start + local.shape[0])] - start,)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor on every process (an all-gather for a sharded one: every process must call it)."""
    return tensor.full_tensor() if is_dtensor(tensor) else tensor


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over the processes in place (nothing without a process group)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor
