"""Propagation: walk the traced graph once, giving every (tensor, dim) its channel atoms.

Only operators that depend on a parameter are interpreted: attention masks, position ids and
rotary tables carry no prunable channel, so their operators need no semantics (tensors from
them get fresh atoms where a parameter path consumes them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.fx import Node

from lorashear.errors import LorashearError
from lorashear.graph.atoms import AtomTable
from lorashear.graph.ops import LINEAR_PASS_OPS, OPS, STEM_OPS, shape_of
from lorashear.graph.trace import Trace

aten = torch.ops.aten


@dataclass
class Stem:
    """A linear map found in the graph: its weight, and the bias added to its output."""

    node: Node
    weight: str | None  # state_dict name when the weight is a parameter
    bias: str | None
    in_atoms: np.ndarray  # the channels it reads
    out_atoms: np.ndarray  # the channels it writes


@dataclass
class Propagation:
    """Atoms of every interpreted tensor, plus what the grouping needs to classify components."""

    trace: Trace
    table: AtomTable = field(default_factory=AtomTable)
    atoms: dict[str, object] = field(default_factory=dict)
    param_nodes: dict[str, str] = field(default_factory=dict)  # node name -> state_dict name
    param_atoms: dict[str, list[np.ndarray]] = field(default_factory=dict)  # state_dict name -> atoms
    embedding_columns: list[np.ndarray] = field(default_factory=list)
    rank_atoms: list[np.ndarray] = field(default_factory=list)
    lookup_rows: list[np.ndarray] = field(default_factory=list)  # embedding rows: indexed, not channels
    output_atoms: list[np.ndarray] = field(default_factory=list)
    stems: list[Stem] = field(default_factory=list)
    factor_pairs: list[tuple[Stem, Stem]] = field(default_factory=list)  # (A, B) of a factorized linear
    norm_kinds: dict[str, str] = field(default_factory=dict)  # state_dict name -> rmsnorm | layernorm
    param_order: dict[str, int] = field(default_factory=dict)  # state_dict name -> first use
    input_dims: set[tuple[str, int]] | None = None  # filled by assembly
    group_layouts: dict = field(default_factory=dict)  # filled by assembly: (kind, params) -> layout
    _stem_of: dict[str, Stem] = field(default_factory=dict)  # node name -> stem

    # --- helpers for the operator handlers ---

    def fresh(self, val) -> list[np.ndarray]:
        return [self.table.new(int(n)) for n in val.shape]

    def get(self, node: Node) -> list[np.ndarray]:
        """Atoms of a tensor; tensors no parameter reaches get fresh atoms on first use."""
        if node.name not in self.atoms:
            val = node.meta.get("val")
            if isinstance(val, (list, tuple)):
                self.atoms[node.name] = tuple(self.fresh(v) for v in val)
            else:
                self.atoms[node.name] = self.fresh(val)
        return self.atoms[node.name]

    def broadcast_union(self, parts: list[tuple[list, tuple]], out_shape: tuple) -> list[np.ndarray]:
        """Right-aligned broadcasting: dims equal to the output's size are one channel space."""
        out = []
        for k in range(1, len(out_shape) + 1):
            n = out_shape[-k]
            same = [atoms[-k] for atoms, shape in parts if len(shape) >= k and shape[-k] == n]
            for other in same[1:]:
                self.table.union(same[0], other)
            out.append(same[0] if same else self.table.new(n))
        return out[::-1]

    def param_name(self, node) -> str | None:
        return self.param_nodes.get(node.name) if isinstance(node, Node) else None

    def note_stem(self, node: Node, x: Node, weight: Node, bias, in_atoms, out_atoms) -> None:
        stem = Stem(node, self.param_name(weight), self.param_name(bias), in_atoms, out_atoms)
        self.stems.append(stem)
        self._stem_of[node.name] = stem
        source = _through(x, LINEAR_PASS_OPS)
        # A stem reading another stem's output with nothing nonlinear between: the middle dim is
        # the rank of a factorized linear (LoRA A then B); it is never pruned.
        if source.op == "call_function" and source.target in STEM_OPS:
            self.rank_atoms.append(self.get(x)[-1])
            if source.name in self._stem_of:
                self.factor_pairs.append((self._stem_of[source.name], stem))

    def note_norm(self, param: Node, kind: str) -> None:
        name = self.param_name(param)
        if name is not None:
            self.norm_kinds[name] = kind


def _through(node: Node, ops: set) -> Node:
    """Walk back from `node` through single-tensor pass ops (scalar scaling included)."""
    while node.op == "call_function" and node.target in ops:
        tensors = [a for a in node.args if isinstance(a, Node)]
        if len(tensors) != 1:
            break
        node = tensors[0]
    return node


def _rmsnorm_weights(prop: Propagation) -> None:
    """Mark 1-D parameters that scale x * rsqrt(mean(x^2)) (possibly as 1 + w) as RMSNorm weights."""
    for node in prop.trace.graph.nodes:
        name = prop.param_name(node)
        if name is None or name in prop.norm_kinds or len(shape_of(node)) != 1:
            continue
        frontier = [node]
        for _ in range(3):  # casts and the "1 +" of Gemma's norm sit between weight and mul
            frontier = [u for n in frontier for u in n.users]
            for user in frontier:
                if user.target == aten.mul.Tensor and any(
                    _has_ancestor(a, aten.rsqrt.default, 4) for a in user.args if isinstance(a, Node) and a is not node
                ):
                    prop.norm_kinds[name] = "rmsnorm"


def _has_ancestor(node: Node, target, depth: int) -> bool:
    if node.op == "call_function" and node.target == target:
        return True
    return depth > 0 and any(_has_ancestor(a, target, depth - 1) for a in node.all_input_nodes)


def propagate(trace: Trace) -> Propagation:
    """Interpret every parameter-dependent operator of the trace."""
    prop = Propagation(trace)
    reached: set[str] = set()
    for node in trace.graph.nodes:
        if node.op == "placeholder" and node.name in trace.param_names:
            name = trace.param_names[node.name]
            prop.param_nodes[node.name] = name
            if name not in prop.param_atoms:  # a tied tensor's second placeholder shares its atoms
                prop.param_atoms[name] = [prop.table.new(n) for n in shape_of(node)]
            prop.atoms[node.name] = prop.param_atoms[name]
            reached.add(node.name)
            continue
        if node.op != "call_function" or not any(n.name in reached for n in node.all_input_nodes):
            continue
        handler = OPS.get(node.target)
        if handler is None:
            raise LorashearError(
                f"operator {node.target} (node '{node.name}') has no channel semantics in "
                "lorashear.graph.ops; add it to OPS there (or report the architecture)"
            )
        for n in node.all_input_nodes:
            name = prop.param_nodes.get(n.name)
            if name is not None:
                prop.param_order.setdefault(name, len(prop.param_order))
        value = handler(prop, node)
        if value is not None:
            prop.atoms[node.name] = value
            reached.add(node.name)
    for out in trace.output_nodes:
        if out.name in reached:
            prop.output_atoms.extend(prop.get(out))
    prop.table.resolve_units()
    _rmsnorm_weights(prop)
    return prop
