"""ParamCounter: the incremental count equals counting the removed elements of each tensor by hand."""

from __future__ import annotations

import math

import torch

from lorashear.graph.counting import ParamCounter
from lorashear.graph.structures import Group, Slice, StructureGraph


def removed_by_hand(shapes: dict[str, tuple[int, ...]], groups: list[Group]) -> int:
    """Base elements (LoRA factors aside) with some index in a removed slice, counted on boolean masks."""
    total = 0
    for name, shape in shapes.items():
        if ".lora_" in name:
            continue
        gone = torch.zeros(shape, dtype=torch.bool)
        for g in groups:
            for s in g.slices:
                if s.param == name:
                    gone.index_fill_(s.dim, torch.tensor(s.index), True)
        total += int(gone.sum())
    return total


def test_incremental_count_equals_masks_with_rows_columns_and_repeats():
    shapes = {"w": (6, 5), "v": (4,), "m.lora_A.weight": (2, 5)}
    groups = [Group("a", 0, [Slice("w", 0, (0, 2)), Slice("v", 0, (1,)), Slice("m.lora_A.weight", 1, (0,))]),
              Group("b", 0, [Slice("w", 1, (1, 4)), Slice("w", 0, (2, 3))]),  # rows and columns, one row repeated
              Group("c", 0, [Slice("w", 1, (4,)), Slice("v", 0, (1, 3))])]
    graph = StructureGraph(groups=groups, param_shapes=shapes)
    counter = ParamCounter(graph)
    assert counter.total == 30 + 4  # LoRA factors are not counted
    for k in range(1, len(groups) + 1):
        expected = removed_by_hand(shapes, groups[:k]) - counter.removed_params
        assert counter.cost(groups[k - 1:k]) == expected  # asking does not change the count
        assert counter.add(groups[k - 1:k]) == expected
        assert counter.removed_params == removed_by_hand(shapes, groups[:k])
    assert counter.cost(groups) == 0
    assert counter.removed_params == 30 + 4 - math.prod((6 - 3, 5 - 2)) - (4 - 2)
