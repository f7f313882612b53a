"""build_graph: trace the model, propagate channels, assemble the groups."""

from __future__ import annotations

import torch

from lorashear.errors import LorashearError
from lorashear.graph.assemble import assemble
from lorashear.graph.propagate import propagate
from lorashear.graph.structures import DEFAULT_KINDS, StructureGraph
from lorashear.graph.trace import trace_model


def build_graph(
    model: torch.nn.Module,
    kinds: tuple[str, ...] = DEFAULT_KINDS,
    example_input: torch.Tensor | None = None,
) -> StructureGraph:
    """Discover the minimally removable structures of `model` (peft LoRA attached or not)."""
    refuse_dora(model)
    trace = trace_model(model, example_input)
    prop = propagate(trace)
    groups = assemble(prop, tuple(kinds))
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    config = getattr(model, "config", None)
    if config is None and hasattr(model, "get_base_model"):
        config = getattr(model.get_base_model(), "config", None)
    return StructureGraph(groups, shapes, getattr(config, "model_type", "") or "")


def refuse_dora(model: torch.nn.Module) -> None:
    """DoRA rescales each column by a learnt magnitude, so neither the graph's LoRA slices nor W + s·BA describe
    it; refuse it up front with the fix (merge it) instead of failing deep in tracing or scoring wrongly."""
    for name, module in model.named_modules():
        if any(getattr(module, "use_dora", {}).values()):
            raise LorashearError(
                f"{name} has a DoRA adapter, which lorashear cannot prune through; merge it into the model first "
                "(peft: model.merge_and_unload()) and prune that")
