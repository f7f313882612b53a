"""The pruning stage's output (`PruningPlan`) and the one selection routine every method uses."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lorashear.errors import LorashearError
from lorashear.graph.counting import ParamCounter
from lorashear.graph.structures import (
    HIDDEN_CHANNEL,
    MLP_CHANNEL,
    Group,
    StructureGraph,
    groups_from_json,
    groups_to_json,
)

CHANNEL_KINDS = (MLP_CHANNEL, HIDDEN_CHANNEL)  # kinds whose kept count `multiple_of` rounds


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
        d["groups"] = groups_to_json(self.groups)
        d["achieved_ratio"] = self.achieved_ratio
        return d

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def from_dict(cls, d: dict) -> PruningPlan:
        d = {k: v for k, v in d.items() if k != "achieved_ratio"}
        return cls(**{**d, "groups": groups_from_json(d["groups"])})


def select(
    graph: StructureGraph,
    scores: dict[int, float],
    ratio: float,
    uniform: bool,
    kinds: list[str],
    method: str,
    settings: dict | None = None,
    aliases: dict[str, str] | None = None,
    multiple_of: int = 1,
) -> PruningPlan:
    """Remove the lowest-scored groups (`scores`: index in graph.groups -> score) until `ratio` of all
    base parameters is gone; `uniform` removes the same number of each kind from every layer.

    One group of each kind is always kept per layer (an attention without heads cannot run). With
    `multiple_of` m, the kept channels (a layer's MLP channels, the hidden channels) stay a positive
    multiple of m: kernels prefer widths of 8 or 64, and a hidden width divisible by the head count
    keeps a uniform export a plain config.
    """
    if not 0.0 < ratio < 1.0:
        raise LorashearError(f"--ratio must be in (0, 1), got {ratio}")
    if isinstance(multiple_of, bool) or not isinstance(multiple_of, int) or multiple_of < 1:
        raise LorashearError(f"the channel multiple must be a positive integer, got {multiple_of!r}")
    members: dict[tuple, list[int]] = {}
    for i, g in enumerate(graph.groups):
        if g.prunable and g.kind in kinds:
            members.setdefault((g.kind, g.layer), []).append(i)
    # Per (kind, layer): what may go, lowest scores first, in chunks that keep a valid count.
    slots = {
        key: _chunks(sorted(ix, key=lambda i: scores[i]), multiple_of if key[0] in CHANNEL_KINDS else 1)
        for key, ix in members.items()
    }
    if not any(slots.values()):
        reasons = {g.kind: g.unprunable for g in graph.groups if g.kind in kinds and g.unprunable}
        why = "".join(f" ({kind}: {reason})" for kind, reason in reasons.items())
        raise LorashearError(
            f"no prunable group of kinds {list(kinds)} in this model{why}; try other --structures"
        )
    # Tiers are removed whole: one chunk each, or (uniform) the k-th chunk of a kind in every layer.
    # A slot's chunks sort in score order, and the first (the smallest, when the count is not a
    # multiple) costs least: the greedy fill below takes it before the slot's later chunks.
    tiers: list[list[int]] = []
    if uniform:
        for kind in kinds:
            layered = [chunks for (k, layer), chunks in slots.items() if k == kind and layer is not None]
            if layered:
                depth = min(len(chunks) for chunks in layered)
                tiers += [[i for chunks in layered for i in chunks[k]] for k in range(depth)]
            tiers += [chunk for (k, layer), chunks in slots.items() if k == kind and layer is None for chunk in chunks]
    else:
        tiers = [chunk for chunks in slots.values() for chunk in chunks]
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
        settings={**(settings or {}), **({"multiple_of": multiple_of} if multiple_of > 1 else {})},
    )


def _chunks(ordered: list[int], multiple: int) -> list[list[int]]:
    """Removable chunks of one slot's groups (`ordered` lowest score first): removing any prefix of
    them keeps a positive multiple of `multiple` (1: single groups, the best one kept)."""
    removable = len(ordered) - multiple
    first = len(ordered) % multiple or multiple
    ends = list(range(first, removable + 1, multiple))
    return [ordered[start:end] for start, end in zip([0, *ends][:-1], ends, strict=True)]


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


def select_more(
    graph: StructureGraph,
    scores: dict[int, float],
    chosen: set[int],
    ratio: float,
    uniform: bool,
    kinds: list[str],
    method: str,
    aliases: dict[str, str] | None = None,
    multiple_of: int = 1,
) -> list[int]:
    """Groups `select` adds to the already `chosen` ones (forced in first, so earlier choices stay) to reach
    `ratio`, in index order: the cumulative selection of progressive methods (LHSPG periods, LoRAPrune masks)."""
    forced = {**scores, **dict.fromkeys(chosen, float("-inf"))}
    plan = select(graph, forced, ratio, uniform, list(kinds), method, aliases=aliases, multiple_of=multiple_of)
    index = {id(g): i for i, g in enumerate(graph.groups)}
    return sorted(index[id(g)] for g in plan.groups if index[id(g)] not in chosen)


def removal_summary(graph: StructureGraph, indices, aliases: dict[str, str] | None = None,
                    label: str = "removed") -> dict:
    """Step-log keys of a set of removed (zeroed, masked) groups: `label` {kind: count}, sparsity, live_params."""
    counter = ParamCounter(graph, aliases)
    counter.add([graph.groups[i] for i in sorted(indices)])
    kinds: dict[str, int] = {}
    for i in indices:
        kinds[graph.groups[i].kind] = kinds.get(graph.groups[i].kind, 0) + 1
    return {label: dict(sorted(kinds.items())), "sparsity": counter.removed_params / counter.total,
            "live_params": counter.total - counter.removed_params}
