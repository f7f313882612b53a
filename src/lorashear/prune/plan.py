"""The pruning stage's output (`PruningPlan`) and the one selection routine every method uses."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lorashear.errors import LorashearError
from lorashear.graph.structures import Group, StructureGraph


@dataclass
class PruningPlan:
    """Groups to remove and the settings that chose them (JSON-serialisable)."""

    method: str
    ratio: float
    uniform: bool
    kinds: list[str]
    groups: list[Group]
    params_total: int
    params_removed: int
    settings: dict = field(default_factory=dict)

    @property
    def achieved_ratio(self) -> float:
        return self.params_removed / self.params_total

    def to_dict(self) -> dict:
        d = asdict(self)
        d["groups"] = [g.to_dict() for g in self.groups]
        d["achieved_ratio"] = self.achieved_ratio
        return d

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def from_dict(cls, d: dict) -> PruningPlan:
        d = {k: v for k, v in d.items() if k != "achieved_ratio"}
        return cls(**{**d, "groups": [Group.from_dict(g) for g in d["groups"]]})


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

    def _kept(self, name: str, removed: list[set[int]] | None) -> int:
        if removed is None:
            return math.prod(self.shapes[name])
        return math.prod(n - len(r) for n, r in zip(self.shapes[name], removed, strict=True))

    def _apply(self, groups: list[Group], commit: bool) -> int:
        gained, changed = 0, {}
        for g in groups:
            for s in g.slices:
                name = self.aliases.get(s.param, s.param)
                if name not in self.shapes:
                    continue
                if name not in changed:
                    old = self.removed.get(name)
                    changed[name] = [set(r) for r in old] if old else [set() for _ in self.shapes[name]]
                changed[name][s.dim].update(s.index)
        for name, new in changed.items():
            gained += self._kept(name, self.removed.get(name)) - self._kept(name, new)
        if commit:
            self.removed.update(changed)
            self.removed_params += gained
        return gained

    def cost(self, groups: list[Group]) -> int:
        """Parameters that adding `groups` would remove."""
        return self._apply(groups, commit=False)

    def add(self, groups: list[Group]) -> int:
        return self._apply(groups, commit=True)


def select(
    graph: StructureGraph,
    scores: dict[int, float],
    ratio: float,
    uniform: bool,
    kinds: list[str],
    method: str,
    settings: dict | None = None,
    aliases: dict[str, str] | None = None,
) -> PruningPlan:
    """Remove the lowest-scored groups (`scores`: index in graph.groups -> score) until `ratio` of all
    base parameters is gone; `uniform` removes the same number of each kind from every layer.

    One group of each kind is always kept per layer (an attention without heads cannot run).
    """
    if not 0.0 < ratio < 1.0:
        raise LorashearError(f"--ratio must be in (0, 1), got {ratio}")
    slots: dict[tuple, list[int]] = {}
    for i, g in enumerate(graph.groups):
        if g.prunable and g.kind in kinds:
            slots.setdefault((g.kind, g.layer), []).append(i)
    slots = {k: sorted(ix, key=lambda i: scores[i])[:-1] for k, ix in slots.items()}  # keep the best
    if not any(slots.values()):
        reasons = {g.kind: g.unprunable for g in graph.groups if g.kind in kinds and g.unprunable}
        why = "".join(f" ({kind}: {reason})" for kind, reason in reasons.items())
        raise LorashearError(
            f"no prunable group of kinds {list(kinds)} in this model{why}; try other --structures"
        )
    # Tiers are removed whole: one group each, or (uniform) the k-th lowest of a kind in every layer.
    tiers: list[list[int]] = []
    if uniform:
        for kind in kinds:
            layered = [ix for (k, layer), ix in slots.items() if k == kind and layer is not None]
            if layered:
                tiers += [[ix[k] for ix in layered] for k in range(min(len(ix) for ix in layered))]
            tiers += [[i] for (k, layer), ix in slots.items() if k == kind and layer is None for i in ix]
    else:
        tiers = [[i] for ix in slots.values() for i in ix]
    tiers.sort(key=lambda t: sum(scores[i] for i in t) / len(t))

    counter = ParamCounter(graph, aliases)
    target = ratio * counter.total
    _check_reachable(graph, tiers, counter, ratio, kinds, aliases)
    chosen: list[int] = []
    skipped: list[tuple[int, list[int]]] = []
    for tier in tiers:
        missing = target - counter.removed_params
        if missing <= 0:
            break
        members = [graph.groups[i] for i in tier]
        cost = counter.cost(members)
        if cost > missing:  # would overshoot: try lower-cost tiers first
            skipped.append((cost, tier))
            continue
        counter.add(members)
        chosen += tier
    missing = target - counter.removed_params
    if missing > 0 and skipped:  # one overshooting tier, if it lands closer to the target
        _, tier = min(skipped, key=lambda ct: ct[0])
        members = [graph.groups[i] for i in tier]
        if counter.cost(members) - missing < missing:
            counter.add(members)
            chosen += tier
    return PruningPlan(
        method=method,
        ratio=ratio,
        uniform=uniform,
        kinds=list(kinds),
        groups=[graph.groups[i] for i in sorted(chosen)],
        params_total=counter.total,
        params_removed=counter.removed_params,
        settings=settings or {},
    )


def _check_reachable(
    graph: StructureGraph,
    tiers: list[list[int]],
    counter: ParamCounter,
    ratio: float,
    kinds: list[str],
    aliases: dict[str, str] | None,
) -> None:
    """Refuse a ratio that removing every candidate group could not reach (within 1% of the total)."""
    everything = ParamCounter(graph, aliases)
    most = everything.cost([graph.groups[i] for tier in tiers for i in tier]) / counter.total
    if most < ratio - 0.01:
        raise LorashearError(
            f"a ratio of {ratio:.2%} is not reachable with structures {list(kinds)}: removing every prunable "
            f"group (one of each kind kept per layer) removes only {most:.2%} of the parameters "
            "(embeddings and norms belong to no such group); lower --ratio or add structures such as hidden_channel"
        )
