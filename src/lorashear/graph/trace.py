"""Tracing: an ATen operator graph of the model, with parameters mapped to state_dict names.

We trace with `make_fx` (fake tensors, pre-dispatch ATen: the IR of `torch.export`'s training
graph, with aten.linear and sdpa kept whole) over `functional_call`, so parameters are graph
inputs. `torch.export.export(strict=False)` gives the same operators but spends about half of
its time on guards, runtime asserts and verification that the dependency graph never reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx.config
from torch.fx.experimental.proxy_tensor import make_fx

from lorashear.errors import LorashearError


@dataclass
class Trace:
    """The traced graph, and which placeholder nodes are parameters (by state_dict name)."""

    module: torch.fx.GraphModule
    param_names: dict[str, str]  # placeholder node name -> state_dict name
    output_nodes: list[torch.fx.Node]

    @property
    def graph(self) -> torch.fx.Graph:
        return self.module.graph


def default_example_input(model: torch.nn.Module) -> torch.Tensor:
    """A small batch of token ids; batch 2 x 7 tokens keeps dims distinct from heads and channels."""
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 2) or 2)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab, (2, 7), generator=generator).to(device)


def trace_model(model: torch.nn.Module, example_input: torch.Tensor | None = None) -> Trace:
    """Trace `model(input_ids).logits` into an ATen graph whose first inputs are the parameters."""
    if example_input is None:
        example_input = default_example_input(model)
    # Tied tensors (embedding = lm_head) are passed once, under their first name;
    # functional_call ties the other names to it.
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())

    def logits(params: dict, buffers: dict, input_ids: torch.Tensor) -> torch.Tensor:
        # use_cache=False: no KV cache object to trace through.
        out = torch.func.functional_call(model, {**params, **buffers}, (input_ids,), {"use_cache": False})
        return out.logits if hasattr(out, "logits") else out[0]

    was_training = model.training
    emit_setting = torch.fx.config.do_not_emit_stack_traces
    model.eval()  # dropout must trace as identity
    try:
        # Stack traces per node cost ~20% of tracing time and we never read them.
        torch.fx.config.do_not_emit_stack_traces = True
        module = make_fx(logits, tracing_mode="fake", pre_dispatch=True)(params, buffers, example_input)
    except Exception as err:  # tracing raises many types; all mean the same to the user
        raise LorashearError(
            f"could not trace {type(model).__name__} ({type(err).__name__}: {err}); "
            "pass an example_input the model accepts, or report the architecture"
        ) from err
    finally:
        torch.fx.config.do_not_emit_stack_traces = emit_setting
        model.train(was_training)
    placeholders = [n for n in module.graph.nodes if n.op == "placeholder"]
    param_names = {node.name: name for node, name in zip(placeholders, params, strict=False)}
    output = next(n for n in module.graph.nodes if n.op == "output")
    flat = output.args[0]
    outputs = list(flat) if isinstance(flat, (list, tuple)) else [flat]
    return Trace(module, param_names, [n for n in outputs if isinstance(n, torch.fx.Node)])
