"""Tracing: an ATen operator graph of the model, with parameters mapped to state_dict names."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx.config
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

from lorashear.errors import LorashearError


@dataclass
class Trace:
    """The exported graph, and which placeholder nodes are parameters (by state_dict name)."""

    program: ExportedProgram
    param_names: dict[str, str]  # placeholder node name -> state_dict name
    output_nodes: list[torch.fx.Node]

    @property
    def graph(self) -> torch.fx.Graph:
        return self.program.graph


def default_example_input(model: torch.nn.Module) -> torch.Tensor:
    """A small batch of token ids; batch 2 x 7 tokens keeps dims distinct from heads and channels."""
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 2) or 2)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab, (2, 7), generator=generator).to(device)


def trace_model(model: torch.nn.Module, example_input: torch.Tensor | None = None) -> Trace:
    """Export `model(input_ids)` with torch.export (non-strict) into an ATen graph."""
    if example_input is None:
        example_input = default_example_input(model)
    was_training = model.training
    emit_setting = torch.fx.config.do_not_emit_stack_traces
    model.eval()  # dropout must trace as identity
    try:
        # use_cache=False: a KV cache object in the outputs is not a tensor tree export accepts.
        # Stack traces per node cost ~20% of export time and we never read them.
        torch.fx.config.do_not_emit_stack_traces = True
        program = torch.export.export(model, (example_input,), kwargs={"use_cache": False}, strict=False)
    except Exception as err:  # export raises many types; all mean the same to the user
        raise LorashearError(
            f"could not trace {type(model).__name__} with torch.export ({type(err).__name__}: {err}); "
            "pass an example_input the model accepts, or report the architecture"
        ) from err
    finally:
        torch.fx.config.do_not_emit_stack_traces = emit_setting
        model.train(was_training)
    # Tied weights (embedding = lm_head) may come as two placeholders: name both by the
    # first state_dict name of the shared tensor, so the tensor appears once.
    tensors = dict(model.named_parameters(remove_duplicate=False))
    first_name: dict[int, str] = {}
    for name, tensor in tensors.items():
        first_name.setdefault(id(tensor), name)
    param_names = {
        spec.arg.name: first_name[id(tensors[spec.target])] if spec.target in tensors else spec.target
        for spec in program.graph_signature.input_specs
        if spec.kind == InputKind.PARAMETER
    }
    output = next(n for n in program.graph.nodes if n.op == "output")
    flat = output.args[0]
    outputs = list(flat) if isinstance(flat, (list, tuple)) else [flat]
    return Trace(program, param_names, [n for n in outputs if isinstance(n, torch.fx.Node)])
