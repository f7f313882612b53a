"""`GroupVariables`: each group's variable x_g (its base-weight slices) next to its LoRA slices.

Shared by the trained pruners: LHSPG projects, fades and zeroes x_g; LoRAPrune zeroes masked groups.

A group's variable is every element its slices name, each tensor once (tied weights share one
tensor; a group with both rows R and columns C of one matrix holds W[R, :] and W[not R, C]). For a
weight with LoRA, s·BA on the same elements is B[R]·A (rows that are outputs) or B·A[:, C] (columns
that are inputs), transposed for fan-in-fan-out layers (gpt2's Conv1D). The group's LoRA slices are
the rows of B for its output indices and the columns of A for its input indices: zeroing them after
absorbing s·BA into x removes exactly the absorbed part and leaves every other element's function.

Many groups at once (`waves`, `zero_many`, `scale_many`): per tensor and dim, every group's rows (or
columns) are read and written in one indexed operation as `Lines`. Groups that share a tensor along
different dims (a head's rows and a hidden channel's columns of one matrix) share elements, so they go
in different waves, in group order: each wave sees the previous one's writes, as one group after another would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lorashear.distributed import all_reduce_sum, full_tensor, is_dtensor, local_index, local_rows
from lorashear.errors import LorashearError
from lorashear.graph.structures import Group
from lorashear.importance.base import lora_layers


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

    @property
    def dim(self) -> int:
        """The dim `own` indexes: 0 rows (or a vector's elements), 1 columns."""
        return len(self.index) - 1

    def keep(self) -> torch.Tensor | None:
        """For a columns piece, which rows of each column are its own (None: all; the rest are its group's rows)."""
        if self.dim == 0 or isinstance(self.index[0], slice) or self.index[0].numel() == self.param.shape[0]:
            return None
        mask = torch.zeros(self.param.shape[0], dtype=torch.bool, device=self.param.device)
        mask[self.index[0].flatten()] = True
        return mask

    def values(self) -> torch.Tensor:
        return self.param.data[self.index]

    def numel(self) -> int:
        """Elements of the piece (without reading them)."""
        if self.dim == 0:
            return len(self.index[0]) * (self.param.shape[1] if self.param.dim() > 1 else 1)
        rows = self.param.shape[0] if isinstance(self.index[0], slice) else self.index[0].numel()
        return rows * self.index[1].numel()

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


@dataclass
class Lines:
    """Many groups' pieces of one tensor along one dim, read as lines [n, L] (rows, or columns transposed).

    Line k is `param`'s row (column) `index[k]` of the group at position `owner[k]`; `keep` [n, L] marks
    the elements that are that group's (None: all of them; a columns piece leaves its group's rows out).
    A tensor sharded across processes (FSDP, `train.sharding`) is read and written where this process holds it:
    its rows among the row lines, its rows of every column line; `sharded` tells the sums to add the processes'.
    """

    param: nn.Parameter
    dim: int
    index: torch.Tensor
    owner: torch.Tensor
    lora: list[LoraFactors]
    transpose: bool
    keep: torch.Tensor | None
    sharded: bool = False

    @classmethod
    def of(cls, parts: list[tuple[int, Piece]]) -> Lines:
        first = parts[0][1]
        masks = [piece.keep() for _, piece in parts]
        keep = None
        if any(m is not None for m in masks):
            full = torch.ones(first.param.shape[0], dtype=torch.bool, device=first.param.device)
            keep = torch.cat([(full if m is None else m).expand(len(p.own), -1) for m, (_, p) in zip(masks, parts,
                                                                                                      strict=True)])
        owner = torch.cat([torch.full((len(p.own),), k, dtype=torch.long) for k, p in parts])
        lines = cls(first.param, first.dim, torch.cat([p.own for _, p in parts]), owner.to(first.param.device),
                    first.lora, first.transpose, keep)
        return lines.local() if is_dtensor(first.param) else lines

    def local(self) -> Lines:
        """These lines where this process holds them (indices into its rows); the same lines without sharding."""
        if self.transpose:
            raise LorashearError("sharded trained pruning handles Linear layers only (not fan-in-fan-out Conv1D)")
        w, start = local_rows(self.param)
        end = start + w.shape[0]
        if self.dim == 0:
            mine = (self.index >= start) & (self.index < end)
            keep = None if self.keep is None else self.keep[mine]
            return Lines(self.param, 0, self.index[mine] - start, self.owner[mine], self.lora, False, keep, True)
        keep = None if self.keep is None else self.keep[:, start:end]
        return Lines(self.param, self.dim, self.index, self.owner, self.lora, False, keep, True)

    @property
    def data(self) -> torch.Tensor:
        """The tensor the lines index: the parameter, or this process's rows of it."""
        return local_rows(self.param)[0]

    def read(self) -> torch.Tensor:
        """The lines' current values (float32)."""
        w = self.data
        if w.dim() == 1:
            return w.index_select(0, self.index).float()[:, None]
        lines = w.index_select(self.dim, self.index).float()
        return lines if self.dim == 0 else lines.T

    def lora_update(self) -> torch.Tensor:
        """s·BA on the lines (zeros where the tensor has no LoRA). Sharded: B's rows are W's (both split by output
        row), A (r × in) is gathered whole, by every process."""
        w = self.data
        width = 1 if w.dim() == 1 else w.shape[1 - self.dim]
        total = torch.zeros(len(self.index), width, dtype=torch.float32, device=w.device)
        for f in self.lora:
            a, b = full_tensor(f.a.detach()).float(), local_rows(f.b)[0]
            if (self.dim == 0) != self.transpose:  # the lines are outputs: B's rows
                total += f.scaling * (b.index_select(0, self.index).float() @ a)
            else:  # inputs: A's columns
                total += f.scaling * (b.float() @ a.index_select(1, self.index)).T
        return total

    def write(self, values: torch.Tensor, old: torch.Tensor) -> None:
        """Lines ← `values` on the owners' elements (`old`, what `read` gave, elsewhere)."""
        if self.keep is not None:
            values = torch.where(self.keep, values, old)
        w = self.data
        values = values.to(w.dtype)
        if w.dim() == 1:
            w.index_copy_(0, self.index, values[:, 0])
        else:
            w.index_copy_(self.dim, self.index, values if self.dim == 0 else values.T)

    def fill_zero(self) -> None:
        """Zero the lines entirely (a columns piece's left-out rows are its group's rows piece, zeroed too)."""
        self.data.index_fill_(self.dim, self.index, 0)

    def per_group(self, values: torch.Tensor, out: torch.Tensor) -> None:
        """Add each line's sum of `values` (owners' elements only) to `out[owner]` (float64); sharded lines add this
        process's part (`sum_groups` adds the processes')."""
        values = values.double()
        if self.keep is not None:
            values = values * self.keep
        out.index_add_(0, self.owner, values.sum(dim=1))


def sum_groups(lines: list[Lines], values: list[torch.Tensor], groups: int) -> torch.Tensor:
    """Σ of `values` (one tensor per `Lines`) over each group's elements: [groups] float64, over every process's
    part when the lines are sharded (every process calls it for the same lines)."""
    out = torch.zeros(groups, dtype=torch.float64, device=values[0].device if values else None)
    for part, v in zip(lines, values, strict=True):
        part.per_group(v, out)
    if any(part.sharded for part in lines):
        all_reduce_sum(out)
    return out


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
                raise LorashearError(f"trained pruning handles vectors and matrices only; {s.param} has shape {tuple(p.shape)}")
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
                if r:
                    other = torch.ones(p.shape[0], dtype=torch.bool, device=dev)
                    other[r] = False  # W[R, C] already belongs to the rows piece
                    ro = other.nonzero().squeeze(1)
                    index = (ro[:, None], ci[None, :])
                else:  # every row: a slice, not a full-row index tensor per group (down_proj: 32 KB each at 4096)
                    ro, index = None, (slice(None), ci)
                pieces.append(Piece(p, index, lora, out=ci if fan_in_fan_out else ro,
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
        self.zero_many([i], optimizer)

    def zero_many(self, indices, optimizer=None) -> None:
        """`zero` of many groups: one indexed fill per tensor and dim, one per LoRA factor (and moment)."""
        for lines in self._lines(list(indices)):
            lines.fill_zero()
        self.zero_lora_many(indices, optimizer)

    def zero_lora(self, i: int, optimizer=None) -> None:
        """The group's LoRA slices and their optimizer moments (exp_avg, exp_avg_sq …) to zero."""
        self.zero_lora_many([i], optimizer)

    def zero_lora_many(self, indices, optimizer=None) -> None:
        """`zero_lora` of many groups at once: one indexed write per LoRA factor (and per moment), not per group."""
        for param, index in self._lora_index(indices):
            zero_at(param, index)
            zero_state(optimizer, param, index)

    def scale(self, i: int, factor: float) -> None:
        """Multiply x_g and the group's LoRA slices by `factor` (the released code's fade)."""
        self.scale_many([i], factor)

    def scale_many(self, indices, factor: float) -> None:
        """`scale` of many groups, a wave at a time (shared elements are scaled once per group, in order)."""
        for wave, lines in self.waves(indices):
            for part in lines:
                x = part.read()
                part.write(x * factor, x)
            for param, index in self._lora_index(wave):
                local, at = local_index(param, index)
                local[at] *= factor

    def _lora_index(self, indices) -> list[tuple[nn.Parameter, tuple]]:
        """(factor, index) of the LoRA slices of all `indices`: one B row index and one A column index per factor."""
        rows: dict[int, tuple[nn.Parameter, list[torch.Tensor]]] = {}
        cols: dict[int, tuple[nn.Parameter, list[torch.Tensor]]] = {}
        for i in indices:
            for param, index in self.lora_slices(i):
                (rows if len(index) == 1 else cols).setdefault(id(param), (param, []))[1].append(index[-1])
        return ([(p, (torch.cat(parts),)) for p, parts in rows.values()]
                + [(p, (slice(None), torch.cat(parts))) for p, parts in cols.values()])

    def waves(self, indices) -> list[tuple[list[int], list[Lines]]]:
        """`indices` cut, in order, into runs of groups that share no element, each with its `Lines`
        (columns before rows, so a group's rows piece is written last where the two meet)."""
        waves: list[tuple[list[int], dict[int, set[int]]]] = []
        for i in indices:
            dims: dict[int, set[int]] = {}
            for piece in self.pieces[i]:
                dims.setdefault(id(piece.param), set()).add(piece.dim)
            if not waves or any(k in waves[-1][1] and (len(d) > 1 or waves[-1][1][k] != d) for k, d in dims.items()):
                waves.append(([], {}))
            waves[-1][0].append(i)
            waves[-1][1].update(dims)
        return [(wave, self._lines(wave)) for wave, _ in waves]

    def _lines(self, indices: list[int]) -> list[Lines]:
        """The pieces of `indices`, one `Lines` per tensor and dim, columns first; `owner` = position in `indices`."""
        parts: dict[tuple[int, int], list[tuple[int, Piece]]] = {}
        for k, i in enumerate(indices):
            for piece in self.pieces[i]:
                parts.setdefault((-piece.dim, id(piece.param)), []).append((k, piece))
        return [Lines.of(parts[key]) for key in sorted(parts, key=lambda key: key[0])]

    def numel(self, i: int) -> int:
        """Elements of group i's variable x_g."""
        return sum(piece.numel() for piece in self.pieces[i])

    def chunks(self, indices, max_elements: int) -> list[list[int]]:
        """`indices` cut, in order, into runs of at most `max_elements` elements of x (a larger group alone): the
        many-group operations hold float32 temporaries per element of what they process at once."""
        out: list[list[int]] = [[]]
        size = 0
        for i in indices:
            n = self.numel(i)
            if out[-1] and size + n > max_elements:
                out.append([])
                size = 0
            out[-1].append(i)
            size += n
        return [chunk for chunk in out if chunk]

    def lora_slices(self, i: int) -> list[tuple[nn.Parameter, tuple]]:
        return [s for piece in self.pieces[i] for s in piece.own_lora_slices()]

    def is_zero(self, i: int) -> bool:
        return all(not v.any() for v in self.values(i)) and all(not p.data[ix].any() for p, ix in self.lora_slices(i))


def zero_state(optimizer, param: nn.Parameter, index: tuple) -> None:
    """Zero `index` of every per-element optimizer state of `param` (Adam's moments, SGD's momentum)."""
    if optimizer is None:
        return
    inner = getattr(optimizer, "optimizer", optimizer)  # Accelerate wraps the torch optimizer
    for value in inner.state.get(param, {}).values():
        if torch.is_tensor(value) and value.shape == param.shape:
            zero_at(value, index)


def zero_at(tensor: torch.Tensor, index: tuple) -> None:
    """tensor[index] = 0, index global: (rows,) or (slice(None), columns); a sharded tensor where this process holds it."""
    local, at = local_index(tensor, index)
    local[at] = 0


def _lora_by_weight(model: nn.Module) -> dict[int, tuple[list[LoraFactors], bool]]:
    """id(base weight) -> (its active unmerged LoRA adapters, fan_in_fan_out) for every peft LoRA layer."""
    out = {}
    for name, layer in lora_layers(model).items():
        merged = set(getattr(layer, "merged_adapters", []))
        adapters = [a for a in layer.active_adapters if a not in merged]
        odd = [a for a in adapters if a not in layer.lora_A]
        if odd:
            raise LorashearError(f"trained pruning supports LoRA on linear layers only; {name} has adapter(s) {odd} of another type")
        factors = [LoraFactors(layer.lora_A[a].weight, layer.lora_B[a].weight, float(layer.scaling[a])) for a in adapters]
        out[id(layer.base_layer.weight)] = (factors, bool(getattr(layer, "fan_in_fan_out", False)))
    return out
