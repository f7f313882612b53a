"""Counting the base parameters that groups remove: exact, overlaps once, tied tensors once."""

from __future__ import annotations

import math

from lorashear.graph.structures import Group, StructureGraph


class ParamCounter:
    """Exact count of base parameters removed by a growing set of groups (overlaps counted once).

    LoRA factors are not counted (they merge into the base weights); `aliases` maps tied names
    (e.g. lm_head.weight) to the one tensor they share, so tied embeddings count once.
    """

    def __init__(self, graph: StructureGraph, aliases: dict[str, str] | None = None) -> None:
        self.aliases = aliases or {}
        self.shapes = {
            n: s for n, s in graph.param_shapes.items() if ".lora_" not in n and n not in self.aliases
        }
        self.total = sum(math.prod(s) for s in self.shapes.values())
        self.removed: dict[str, list[set[int]]] = {}
        self.removed_params = 0

    def _apply(self, groups: list[Group], commit: bool) -> int:
        """Parameters `groups` remove beyond those already removed; `commit` records them. Only the new
        indices are collected (no copy of the removed sets: selection asks this once per candidate)."""
        fresh: dict[str, list[set[int]]] = {}
        for g in groups:
            for s in g.slices:
                name = self.aliases.get(s.param, s.param)
                if name not in self.shapes:
                    continue
                new = fresh.setdefault(name, [set() for _ in self.shapes[name]])[s.dim]
                old = self.removed.get(name)
                new.update(s.index if old is None else (i for i in s.index if i not in old[s.dim]))
        gained = 0
        for name, new in fresh.items():
            shape, old = self.shapes[name], self.removed.get(name)
            before = [len(r) for r in old] if old else [0] * len(shape)
            after = [k + len(n) for k, n in zip(before, new, strict=True)]
            gained += math.prod(d - k for d, k in zip(shape, before, strict=True)) - math.prod(
                d - k for d, k in zip(shape, after, strict=True))
        if commit:
            for name, new in fresh.items():
                for r, n in zip(self.removed.setdefault(name, [set() for _ in self.shapes[name]]), new, strict=True):
                    r.update(n)
            self.removed_params += gained
        return gained

    def cost(self, groups: list[Group]) -> int:
        """Parameters that adding `groups` would remove."""
        return self._apply(groups, commit=False)

    def add(self, groups: list[Group]) -> int:
        return self._apply(groups, commit=True)


def group_sizes(graph: StructureGraph, indices, aliases: dict[str, str] | None = None) -> dict[int, int]:
    """Base parameters each group removes on its own (LoRA factors and tied aliases not counted)."""
    counter = ParamCounter(graph, aliases)
    return {i: counter.cost([graph.groups[i]]) for i in indices}
