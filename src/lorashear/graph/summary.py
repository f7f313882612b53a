"""A graph in numbers and words: the kinds asked for, groups and parameters per kind, unprunable groups."""

from __future__ import annotations

from lorashear.errors import LorashearError
from lorashear.graph.structures import DEFAULT_KINDS, GROUP_KINDS, StructureGraph


def parse_kinds(text: str | None) -> tuple[str, ...]:
    """`kv_group,mlp_channel` (or `all`; None: the defaults) as a tuple of kinds; one clear error for others."""
    if text is None:
        return DEFAULT_KINDS
    if text == "all":
        return GROUP_KINDS
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in GROUP_KINDS]
    if unknown or not kinds:
        raise LorashearError(f"unknown group kinds {unknown or [text]}; choose from {', '.join(GROUP_KINDS)} or 'all'")
    return kinds


def kind_stats(graph: StructureGraph, kinds: tuple[str, ...]) -> dict[str, dict]:
    """Per kind: number of groups, prunable groups, parameters per group (min, max) and in total."""
    stats = {}
    for kind in kinds:
        sizes = [g.num_params(graph.param_shapes) for g in graph.of_kind(kind)]
        stats[kind] = {
            "groups": len(sizes),
            "prunable": sum(g.prunable for g in graph.of_kind(kind)),
            "params_per_group": [min(sizes), max(sizes)] if sizes else None,
            "params": sum(sizes),
        }
    return stats


def summarize(graph: StructureGraph, kinds: tuple[str, ...], seconds: float) -> str:
    """Per kind: groups, prunable groups, parameters per group and in total; unprunable reasons."""
    lines = [f"{'kind':16s} {'groups':>8s} {'prunable':>9s} {'params/group':>13s} {'params':>12s}"]
    for kind, st in kind_stats(graph, kinds).items():
        low, high = st["params_per_group"] or (None, None)
        per = "-" if low is None else (f"{low}" if low == high else f"{low}-{high}")
        lines.append(f"{kind:16s} {st['groups']:8d} {st['prunable']:9d} {per:>13s} {st['params']:12d}")
    for g in graph.groups:
        if g.kind in kinds and not g.prunable:
            first = g.slices[0].param if g.slices else "?"
            lines.append(f"unprunable {g.kind} layer={g.layer} ({first} ...): {g.unprunable}")
    lines.append(f"discovery time: {seconds:.2f} s")
    return "\n".join(lines)
