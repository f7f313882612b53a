"""The graph stage's output: minimally removable structures ("groups") of a model.

A group is the smallest set of parameter slices that must be removed together for the
network to stay valid. Every stage after the graph (importance, pruners, compress, export)
speaks in these objects.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

# Group kinds, coarse to fine.
ATTENTION_BLOCK = "attention_block"  # a layer's whole attention
MLP_BLOCK = "mlp_block"  # a layer's whole MLP
KV_GROUP = "kv_group"  # one KV head, the query heads that share it, their o_proj columns
QUERY_HEAD = "query_head"  # the i-th query head of every KV group of a layer (uniform across groups)
MLP_CHANNEL = "mlp_channel"  # one intermediate channel of an MLP
HIDDEN_CHANNEL = "hidden_channel"  # one residual-stream channel, through every layer
GROUP_KINDS = (ATTENTION_BLOCK, MLP_BLOCK, KV_GROUP, QUERY_HEAD, MLP_CHANNEL, HIDDEN_CHANNEL)
DEFAULT_KINDS = (KV_GROUP, MLP_CHANNEL)


class Slice(NamedTuple):
    """Indices `index` along dimension `dim` of the state_dict tensor `param`.

    A named tuple, not a frozen dataclass: large models have hundreds of thousands of slices and
    a tuple is several times cheaper to build.
    """

    param: str
    dim: int
    index: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"param": self.param, "dim": self.dim, "index": list(self.index)}

    @classmethod
    def from_dict(cls, d: dict) -> Slice:
        return cls(param=d["param"], dim=int(d["dim"]), index=tuple(int(i) for i in d["index"]))


@dataclass(slots=True)
class Group:
    """A minimally removable structure: all of its slices go together. Slotted: a large model has hundreds of
    thousands of groups (Llama-3-8B: 458,752 MLP channels)."""

    kind: str
    layer: int | None
    slices: list[Slice]
    unprunable: str | None = None  # reason, when the group must be kept
    # Slices of other parameters that change with the group but are not removed by it
    # (e.g. norm weights to rescale): for information only.
    meta: dict = field(default_factory=dict)

    @property
    def prunable(self) -> bool:
        return self.unprunable is None

    def num_params(self, shapes: dict[str, tuple[int, ...]] | None = None) -> int:
        """Elements removed with this group (every slice, LoRA factors included)."""
        total = 0
        for s in self.slices:
            if shapes is None:
                raise ValueError("num_params needs the state_dict shapes")
            shape = shapes[s.param]
            rest = 1
            for d, n in enumerate(shape):
                if d != s.dim:
                    rest *= n
            total += rest * len(s.index)
        return total

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "layer": self.layer, "slices": [s.to_dict() for s in self.slices]}
        if self.unprunable:
            d["unprunable"] = self.unprunable
        if self.meta:
            d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Group:
        return cls(
            kind=d["kind"],
            layer=d.get("layer"),
            slices=[Slice.from_dict(s) for s in d["slices"]],
            unprunable=d.get("unprunable"),
            meta=d.get("meta", {}),
        )


def groups_to_json(groups: Iterable[Group]) -> list[dict]:
    """Groups as JSON, compactly: each run of consecutive groups alike but for their indices (same kind, layer,
    parameters and dimensions, verdict and meta) is one record, its `indices` one entry per group: one list when
    every slice of the group has the same indices, else one list per slice. A 50% plan's 34K MLP channels: 12 MB
    as one dict per group (`Group.to_dict`), a few hundred KB so. `groups_from_json` reads it back, in order."""
    records: list[dict] = []
    previous = None  # the last record's fields but its indices
    for g in groups:
        head = {"kind": g.kind, "layer": g.layer, "params": [[s.param, s.dim] for s in g.slices]}
        head.update({"unprunable": g.unprunable} if g.unprunable else {})
        head.update({"meta": g.meta} if g.meta else {})
        same = all(s.index == g.slices[0].index for s in g.slices) and bool(g.slices)
        entry = list(g.slices[0].index) if same else [list(s.index) for s in g.slices]
        if head == previous:
            records[-1]["indices"].append(entry)
        else:
            records.append({**head, "indices": [entry]})
            previous = head
    return records


def groups_from_json(records: list[dict]) -> list[Group]:
    """The groups `groups_to_json` wrote, in their order; also reads one dict per group (`Group.to_dict`: plans
    and pruning records written before the compact form)."""
    groups = []
    for record in records:
        if "slices" in record:  # one group, as Group.to_dict writes it
            groups.append(Group.from_dict(record))
            continue
        params = [(name, int(dim)) for name, dim in record["params"]]
        for entry in record["indices"]:
            per_slice = entry if entry and isinstance(entry[0], list) else [entry] * len(params)
            slices = [Slice(name, dim, tuple(int(i) for i in index))
                      for (name, dim), index in zip(params, per_slice, strict=True)]
            groups.append(Group(kind=record["kind"], layer=record.get("layer"), slices=slices,
                                unprunable=record.get("unprunable"), meta=record.get("meta", {})))
    return groups


@dataclass
class StructureGraph:
    """All groups of one model, with the shapes needed to count their parameters."""

    groups: list[Group]
    param_shapes: dict[str, tuple[int, ...]]
    model_type: str = ""

    def of_kind(self, kind: str) -> list[Group]:
        return [g for g in self.groups if g.kind == kind]

    def prunable(self, kinds: tuple[str, ...] | None = None) -> list[Group]:
        return [g for g in self.groups if g.prunable and (kinds is None or g.kind in kinds)]

    def to_dict(self) -> dict:
        return {
            "model_type": self.model_type,
            "param_shapes": {k: list(v) for k, v in self.param_shapes.items()},
            "groups": [g.to_dict() for g in self.groups],
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    def pack(self) -> bytes:
        """The graph as compressed compact JSON (`groups_to_json`): a few MB where the objects take hundreds;
        `StructureGraph.unpack` gives the same graph back (groups in order, slices in order)."""
        return zlib.compress(json.dumps({"model_type": self.model_type, "groups": groups_to_json(self.groups),
                                         "param_shapes": {k: list(v) for k, v in self.param_shapes.items()}}).encode())

    @classmethod
    def unpack(cls, packed: bytes) -> StructureGraph:
        d = json.loads(zlib.decompress(packed))
        return cls(groups_from_json(d["groups"]), {k: tuple(v) for k, v in d["param_shapes"].items()},
                   d["model_type"])

    @classmethod
    def from_dict(cls, d: dict) -> StructureGraph:
        return cls(
            groups=[Group.from_dict(g) for g in d["groups"]],
            param_shapes={k: tuple(v) for k, v in d["param_shapes"].items()},
            model_type=d.get("model_type", ""),
        )

