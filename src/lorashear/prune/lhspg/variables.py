"""`GroupVariables`: the LHSPG variable x_g of each group (its base-weight slices) next to its LoRA slices.

A group's variable is every element its slices name, each tensor once (tied weights share one
tensor; a group with both rows R and columns C of one matrix holds W[R, :] and W[not R, C]). For a
weight with LoRA, s·BA on the same elements is B[R]·A (rows that are outputs) or B·A[:, C] (columns
that are inputs), transposed for fan-in-fan-out layers (gpt2's Conv1D). The group's LoRA slices are
the rows of B for its output indices and the columns of A for its input indices: zeroing them after
absorbing s·BA into x removes exactly the absorbed part and leaves every other element's function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lorashear.errors import LorashearError
from lorashear.graph.structures import Group


@dataclass
class LoraFactors:
    """One active adapter of a peft LoRA layer: A [r, in], B [out, r], scaling s."""

    a: nn.Parameter
    b: nn.Parameter
    scaling: float


@dataclass
class Piece:
    """Elements `index` (an advanced index) of base tensor `param`, and where their s·BA comes from.

    The LoRA update on these elements is s·B[out]·A[:, inp] (None: all), transposed when `transpose`;
    the group's own LoRA slices are B[own] rows (`own_factor` "b") or A[:, own] columns ("a").
    """

    param: nn.Parameter
    index: tuple[torch.Tensor, ...]
    lora: list[LoraFactors]
    out: torch.Tensor | None = None
    inp: torch.Tensor | None = None
    transpose: bool = False
    own_factor: str = ""
    own: torch.Tensor | None = None

    def values(self) -> torch.Tensor:
        return self.param.data[self.index]

    def write(self, values: torch.Tensor) -> None:
        self.param.data[self.index] = values.to(self.param.dtype)

    def lora_update(self) -> torch.Tensor:
        """s·BA on this piece's elements (zeros where the tensor has no LoRA)."""
        total = torch.zeros_like(self.values(), dtype=torch.float32)
        for f in self.lora:
            b = f.b.data if self.out is None else f.b.data[self.out]
            a = f.a.data if self.inp is None else f.a.data[:, self.inp]
            delta = f.scaling * (b.float() @ a.float())
            total += delta.T if self.transpose else delta
        return total

    def own_lora_slices(self) -> list[tuple[nn.Parameter, tuple]]:
        """(factor, index) of the LoRA slices that carry this piece's update and nothing else's."""
        if self.own is None:
            return []
        if self.own_factor == "b":
            return [(f.b, (self.own,)) for f in self.lora]
        return [(f.a, (slice(None), self.own)) for f in self.lora]


class GroupVariables:
    """Read, write and absorb the variables of chosen groups (graph indices) of a peft model, in place."""

    def __init__(self, model: nn.Module, groups: dict[int, Group]) -> None:
        self.params = dict(model.named_parameters(remove_duplicate=False))
        self.lora = _lora_by_weight(model)
        self.pieces: dict[int, list[Piece]] = {}
        self.add(groups)

    def add(self, groups: dict[int, Group]) -> None:
        for i, group in groups.items():
            if i not in self.pieces:
                self.pieces[i] = self._pieces(group)

    def _pieces(self, group: Group) -> list[Piece]:
        rows: dict[int, set[int]] = {}
        cols: dict[int, set[int]] = {}
        tensors: dict[int, nn.Parameter] = {}
        for s in group.slices:
            if ".lora_" in s.param:
                continue  # the LoRA slices follow from the base slices (see Piece)
            if s.param not in self.params:
                raise LorashearError(f"group slice {s.param} is not a parameter of the model; rebuild the graph")
            p = self.params[s.param]
            if p.dim() > 2 or s.dim > 1:
                raise LorashearError(f"LHSPG handles vectors and matrices only; {s.param} has shape {tuple(p.shape)}")
            tensors[id(p)] = p
            (rows if s.dim == 0 else cols).setdefault(id(p), set()).update(s.index)
        pieces = []
        for key, p in tensors.items():
            r, c = sorted(rows.get(key, ())), sorted(cols.get(key, ()))
            lora, fan_in_fan_out = self.lora.get(key, ([], False))
            dev = p.device
            if r:
                ri = torch.tensor(r, device=dev)
                # W's dim 0 is B's output dim, or A's input dim for fan-in-fan-out weights (W = (BA)ᵀ)
                pieces.append(Piece(p, (ri,), lora, out=None if fan_in_fan_out else ri,
                                    inp=ri if fan_in_fan_out else None, transpose=fan_in_fan_out,
                                    own_factor="a" if fan_in_fan_out else "b", own=ri))
            if c:
                ci = torch.tensor(c, device=dev)
                other = torch.ones(p.shape[0], dtype=torch.bool, device=dev)
                other[r] = False  # W[R, C] already belongs to the rows piece
                ro = other.nonzero().squeeze(1)
                pieces.append(Piece(p, (ro[:, None], ci[None, :]), lora, out=ci if fan_in_fan_out else ro,
                                    inp=ro if fan_in_fan_out else ci, transpose=fan_in_fan_out,
                                    own_factor="b" if fan_in_fan_out else "a", own=ci))
        return pieces

    def values(self, i: int) -> list[torch.Tensor]:
        """x_g as pieces (float32 copies)."""
        return [piece.values().float() for piece in self.pieces[i]]

    def lora_update(self, i: int) -> list[torch.Tensor]:
        """[s·BA]_g, piece by piece like `values`."""
        return [piece.lora_update() for piece in self.pieces[i]]

    def write(self, i: int, values: list[torch.Tensor]) -> None:
        for piece, v in zip(self.pieces[i], values, strict=True):
            piece.write(v)

    def zero(self, i: int, optimizer=None) -> None:
        """x_g = 0 exactly, with the group's LoRA slices and their optimizer moments."""
        self.write(i, [torch.zeros_like(v) for v in self.values(i)])
        self.zero_lora(i, optimizer)

    def zero_lora(self, i: int, optimizer=None) -> None:
        """The group's LoRA slices and their optimizer moments (exp_avg, exp_avg_sq …) to zero."""
        for param, index in self.lora_slices(i):
            param.data[index] = 0
            zero_state(optimizer, param, index)

    def zero_lora_many(self, indices, optimizer=None) -> None:
        """`zero_lora` of many groups at once: one indexed write per LoRA factor (and per moment), not per group."""
        rows: dict[int, tuple[nn.Parameter, list[torch.Tensor]]] = {}
        cols: dict[int, tuple[nn.Parameter, list[torch.Tensor]]] = {}
        for i in indices:
            for param, index in self.lora_slices(i):
                (rows if len(index) == 1 else cols).setdefault(id(param), (param, []))[1].append(index[-1])
        for table, make in ((rows, lambda ix: (ix,)), (cols, lambda ix: (slice(None), ix))):
            for param, parts in table.values():
                index = make(torch.cat(parts))
                param.data[index] = 0
                zero_state(optimizer, param, index)

    def scale(self, i: int, factor: float) -> None:
        """Multiply x_g and the group's LoRA slices by `factor` (the released code's fade)."""
        self.write(i, [v * factor for v in self.values(i)])
        for param, index in self.lora_slices(i):
            param.data[index] *= factor

    def lora_slices(self, i: int) -> list[tuple[nn.Parameter, tuple]]:
        return [s for piece in self.pieces[i] for s in piece.own_lora_slices()]

    def is_zero(self, i: int) -> bool:
        return all(not v.any() for v in self.values(i)) and all(not p.data[ix].any() for p, ix in self.lora_slices(i))


def norm(values: list[torch.Tensor]) -> float:
    """‖x_g‖ over all pieces."""
    return float(torch.stack([v.double().pow(2).sum() for v in values]).sum().sqrt()) if values else 0.0


def dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """⟨a, b⟩ over all pieces."""
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b, strict=True))) if a else 0.0


def zero_state(optimizer, param: nn.Parameter, index: tuple) -> None:
    """Zero `index` of every per-element optimizer state of `param` (Adam's moments, SGD's momentum)."""
    if optimizer is None:
        return
    inner = getattr(optimizer, "optimizer", optimizer)  # Accelerate wraps the torch optimizer
    for value in inner.state.get(param, {}).values():
        if torch.is_tensor(value) and value.shape == param.shape:
            value[index] = 0


def _lora_by_weight(model: nn.Module) -> dict[int, tuple[list[LoraFactors], bool]]:
    """id(base weight) -> (its active unmerged LoRA adapters, fan_in_fan_out) for every peft LoRA layer."""
    from lorashear.importance.base import lora_layers

    out = {}
    for name, layer in lora_layers(model).items():
        merged = set(getattr(layer, "merged_adapters", []))
        adapters = [a for a in layer.active_adapters if a not in merged]
        odd = [a for a in adapters if a not in layer.lora_A]
        if odd:
            raise LorashearError(f"LHSPG supports LoRA on linear layers only; {name} has adapter(s) {odd} of another type")
        factors = [LoraFactors(layer.lora_A[a].weight, layer.lora_B[a].weight, float(layer.scaling[a])) for a in adapters]
        out[id(layer.base_layer.weight)] = (factors, bool(getattr(layer, "fan_in_fan_out", False)))
    return out
