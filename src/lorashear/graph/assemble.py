"""Group assembly: connected components of parameter atoms become `Group`s of each kind.

Classification is structural, never by module name: a component holding embedding columns is
a hidden channel; one holding closed product factors (a head) is a KV group (unprunable when it is
its layer's only one: multi-query attention); one holding the broadcast factor of repeat_kv is a
query head; a plain stem-to-stem channel is an MLP channel;
components of the LoRA rank dim and of head_dim (inside a head, rotary-coupled) are not groups.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cache

import numpy as np

from lorashear.graph.atoms import BLOCKS, HEADS, QUERY_HEADS
from lorashear.graph.propagate import Propagation, Stem
from lorashear.graph.structures import (
    ATTENTION_BLOCK,
    GROUP_KINDS,
    HIDDEN_CHANNEL,
    KV_GROUP,
    MLP_BLOCK,
    MLP_CHANNEL,
    QUERY_HEAD,
    Group,
    Slice,
)

OUTPUT_REASON = "touches the model output (vocabulary dim)"
UNRESOLVED_REASON = "propagation could not resolve this structure (mixed head, stream or rank channels)"
ONLY_KV_HEAD_REASON = (
    "the only KV head of its layer (multi-query attention): it is the whole attention; "
    "remove that with attention_block, or prune query_head"
)


@dataclass
class Component:
    """The parameter slices of one connected component, and what else it touches."""

    label: int
    slices: dict[tuple[str, int], list[int]]

    @property
    def params(self) -> frozenset[tuple[str, int]]:
        return frozenset(self.slices)


class Components:
    """Components of one granularity: labels of every atom, and parameter slices on demand."""

    def __init__(self, prop: Propagation, mode: str):
        self.labels = prop.table.components(mode)
        self.prop = prop

    def flag(self, atom_arrays: list[np.ndarray]) -> np.ndarray:
        """Per label: whether its component contains any of these atoms."""
        flags = np.zeros(int(self.labels.max()) + 1 if len(self.labels) else 0, dtype=bool)
        if atom_arrays:
            flags[self.labels[np.concatenate(atom_arrays)]] = True
        return flags

    def collect(self, keep: np.ndarray) -> list[Component]:
        """The parameter slices of every component whose label `keep` marks, ordered by label."""
        entries_label, entries_key, entries_index = [], [], []
        keys: list[tuple[str, int]] = []
        for name, param_atoms in self.prop.param_atoms.items():
            for dim, atoms in enumerate(param_atoms):
                labels = self.labels[atoms]
                kept = np.flatnonzero(keep[labels])
                if len(kept):
                    keys.append((name, dim))
                    entries_label.append(labels[kept])
                    entries_key.append(np.full(len(kept), len(keys) - 1))
                    entries_index.append(kept)
        if not keys:
            return []
        label = np.concatenate(entries_label)
        key = np.concatenate(entries_key)
        index = np.concatenate(entries_index)
        order = np.lexsort((index, key, label))
        label, key, index = label[order], key[order], index[order]
        # Runs of equal (component, parameter dim) become one slice each; vectorized bounds
        # keep this fast for tens of thousands of MLP channels.
        change = np.flatnonzero((np.diff(label) != 0) | (np.diff(key) != 0)) + 1
        starts, ends = np.r_[0, change].tolist(), np.r_[change, len(label)].tolist()
        run_label, run_key = label[starts].tolist(), key[starts].tolist()
        indices = index.tolist()
        components: list[Component] = []
        current: dict[tuple[str, int], list[int]] = {}
        previous = None
        for lab, k, lo, hi in zip(run_label, run_key, starts, ends, strict=True):
            if lab != previous:
                current, previous = {}, lab
                components.append(Component(lab, current))
            current[keys[k]] = indices[lo:hi]
        return components


@cache
def _layer_in_name(name: str) -> int | None:
    """The layer index written in a parameter's name (`layers.3.`, `h.3.`), if any."""
    match = re.search(r"\.(\d+)\.", name)
    return int(match.group(1)) if match else None


def _group(kind: str, comp_slices: dict[tuple[str, int], list[int]], prop: Propagation,
           unprunable: str | None = None) -> Group:
    """A group from a component's slices; what depends only on which parameters it holds is cached."""
    params = tuple(comp_slices)
    layout = prop.group_layouts.get((kind, params))
    if layout is None:
        layout = prop.group_layouts[(kind, params)] = _layout(kind, params, prop)
    ordered, layer, meta = layout
    indices: dict[tuple[int, ...], tuple[int, ...]] = {}  # one tuple for slices with the same indices
    slices = [Slice(name, dim, indices.setdefault(index := tuple(comp_slices[(name, dim)]), index))
              for name, dim in ordered]
    return Group(kind, layer, slices, unprunable, meta)  # meta: shared by the groups of one layout (read only)


def _layout(kind: str, params: tuple[tuple[str, int], ...], prop: Propagation) -> tuple[list, int | None, dict]:
    """Slice order (first use in the graph), layer and meta of groups holding these (parameter, dim)s."""
    order = prop.param_order
    ordered = sorted(params, key=lambda key: (order.get(key[0], 0), key[1]))
    layer = None
    if kind != HIDDEN_CHANNEL:
        layer = next((n for n in (_layer_in_name(name) for name, _ in ordered) if n is not None), None)
    meta: dict = {}
    norms = {name: prop.norm_kinds[name] for name, _ in ordered if name in prop.norm_kinds}
    if norms:
        meta["norm_types"] = norms
    # The reading side: input columns of linear maps. Zeroing it makes the rest of the group unread.
    meta["inputs"] = [[name, dim] for name, dim in ordered if (name, dim) in _input_dims(prop)]
    return ordered, layer, meta


def _input_dims(prop: Propagation) -> set[tuple[str, int]]:
    """(parameter, dim) pairs that linear maps read as input columns (LoRA A included)."""
    if prop.input_dims is None:
        by_atoms = {id(atoms): (name, d) for name, dims in prop.param_atoms.items() for d, atoms in enumerate(dims)}
        prop.input_dims = {by_atoms[id(s.in_atoms)] for s in prop.stems if id(s.in_atoms) in by_atoms}
    return prop.input_dims


def _writer_biases(prop: Propagation, comps: Components, labels: set[int]) -> dict[tuple[str, int], list[int]]:
    """Whole biases of the stems that read this block: zeroing them too zeroes the block's output."""
    out: dict[tuple[str, int], list[int]] = {}
    for stem in prop.stems:
        if stem.bias is not None and set(np.unique(comps.labels[stem.in_atoms]).tolist()) & labels:
            out[(stem.bias, 0)] = list(range(len(stem.out_atoms)))
    return out


def _dead_factors(prop: Propagation, slices: dict[tuple[str, int], list[int]]) -> dict[tuple[str, int], list[int]]:
    """LoRA factors a block leaves dead, whole along their channel dim (never the rank dim).

    A's output only feeds B: when the block removes all of B's outputs, A goes too; B only reads
    A: when the block removes all of A's inputs, B goes too. Without them the block's module
    would stay, cut to zero width.
    """

    def dim(stem: Stem, atoms: np.ndarray) -> int | None:
        dims = prop.param_atoms.get(stem.weight or "", [])
        return next((d for d, a in enumerate(dims) if a is atoms), None)

    def full(stem: Stem, atoms: np.ndarray) -> bool:
        d = dim(stem, atoms)
        return d is not None and len(slices.get((stem.weight, d), ())) == len(atoms)

    out: dict[tuple[str, int], list[int]] = {}
    for a, b in prop.factor_pairs:
        for dead, side, other, other_side in ((a, a.in_atoms, b, b.out_atoms), (b, b.out_atoms, a, a.in_atoms)):
            d = dim(dead, side)
            if d is not None and full(other, other_side):
                out[(dead.weight, d)] = list(range(len(side)))
    return out


def assemble(prop: Propagation, kinds: tuple[str, ...]) -> list[Group]:
    """Every group of the requested kinds."""
    unknown = set(kinds) - set(GROUP_KINDS)
    if unknown:
        raise ValueError(f"unknown group kinds {sorted(unknown)}; choose from {GROUP_KINDS}")
    groups: list[Group] = []
    heads = Components(prop, HEADS)
    embed = heads.flag(prop.embedding_columns)
    rank = heads.flag(prop.rank_atoms) | heads.flag(prop.lookup_rows)
    output = heads.flag(prop.output_atoms)
    closed = heads.flag([prop.table.closed_atoms(HEADS)])
    inner = heads.flag([f for p in prop.table.products for f in p.factors])
    # Classify every component by its flags, then collect slices only for the wanted ones:
    # LoRA rank, vocabulary rows and head_dim channels are never groups.
    is_hidden = ~rank & embed
    is_head = ~rank & ~embed & ~output & closed
    is_mlp = ~rank & ~embed & ~output & ~closed & ~inner
    keep = np.zeros_like(rank)
    for wanted, flags in ((HIDDEN_CHANNEL in kinds, is_hidden), (KV_GROUP in kinds, is_head),
                          (MLP_CHANNEL in kinds or MLP_BLOCK in kinds, is_mlp)):
        if wanted:
            keep |= flags
    mlp_channels: list[Component] = []
    for comp in heads.collect(keep):
        label = comp.label
        if is_hidden[label]:
            reason = OUTPUT_REASON if output[label] else (UNRESOLVED_REASON if closed[label] else None)
            groups.append(_group(HIDDEN_CHANNEL, comp.slices, prop, unprunable=reason))
        elif is_head[label]:
            groups.append(_group(KV_GROUP, comp.slices, prop))
        else:
            mlp_channels.append(comp)
    _mark_only_kv_heads(groups)
    if MLP_CHANNEL in kinds:
        groups.extend(_group(MLP_CHANNEL, c.slices, prop) for c in mlp_channels)
    if MLP_BLOCK in kinds:
        groups.extend(_blocks(prop, heads, mlp_channels, MLP_BLOCK))
    if QUERY_HEAD in kinds:
        groups.extend(_query_heads(prop))
    if ATTENTION_BLOCK in kinds:
        blocks = Components(prop, BLOCKS)
        attention = blocks.collect(blocks.flag([prop.table.closed_atoms(BLOCKS)]) & ~blocks.flag(
            prop.embedding_columns + prop.rank_atoms + prop.output_atoms))
        groups.extend(_blocks(prop, blocks, attention, ATTENTION_BLOCK))
    rank_of = {kind: i for i, kind in enumerate(GROUP_KINDS)}
    groups.sort(key=lambda g: (rank_of[g.kind], -1 if g.layer is None else g.layer))
    return groups


def _mark_only_kv_heads(groups: list[Group]) -> None:
    """A layer's single KV group cannot go alone (an attention needs a head): say so on the group."""
    per_layer = Counter(g.layer for g in groups if g.kind == KV_GROUP)
    for g in groups:
        if g.kind == KV_GROUP and per_layer[g.layer] == 1 and g.layer is not None and g.prunable:
            g.unprunable = ONLY_KV_HEAD_REASON


def _blocks(prop: Propagation, comps: Components, members: list[Component], kind: str) -> list[Group]:
    """Union of the components that share the same parameters (one layer's MLP or attention)."""
    by_params: dict[frozenset, list[Component]] = defaultdict(list)
    for comp in members:
        by_params[frozenset(name for name, _ in comp.params)].append(comp)
    groups = []
    for parts in by_params.values():
        slices: dict[tuple[str, int], list[int]] = defaultdict(list)
        for comp in parts:
            for key, index in comp.slices.items():
                slices[key].extend(index)
        slices = {key: sorted(index) for key, index in slices.items()}
        slices.update(_writer_biases(prop, comps, {c.label for c in parts}))
        slices.update(_dead_factors(prop, slices))
        groups.append(_group(kind, dict(slices), prop))
    return groups


def _query_heads(prop: Propagation) -> list[Group]:
    """The i-th query head of every KV group: components of repeat_kv's broadcast factor."""
    repeat = [f for p in prop.table.products for f, b in zip(p.factors, p.broadcast, strict=True) if b]
    if not repeat:
        return []  # no GQA: a query head is its KV group
    comps = Components(prop, QUERY_HEADS)
    keep = comps.flag(repeat) & ~comps.flag(prop.embedding_columns + prop.rank_atoms + prop.output_atoms)
    return [_group(QUERY_HEAD, c.slices, prop) for c in comps.collect(keep)]
