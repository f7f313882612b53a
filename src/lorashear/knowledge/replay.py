"""Replaying the layers before a cluster: probing layer l needs a forward pass from layer l on only.

The full model runs once on the held-out batches while every decoder layer's output is cached;
to probe a cluster of layer l, layers 0..l-1 are swapped for modules that return those cached
outputs, so their compute is skipped. Exact (the zeroed cluster cannot change earlier layers),
architecture-agnostic (it only needs the model's list of decoder layers), and it roughly halves
the knowledge analysis's cost on deep models.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from lorashear.importance.calibration import mean_loss


def decoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """The model's list of decoder layers: the longest ModuleList of modules of one class."""
    best = None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and len({type(m) for m in module}) == 1:
            if best is None or len(module) > len(best):
                best = module
    return best


class _Cached(nn.Module):
    """Stands in for a decoder layer: returns what the real layer returned for the current batch."""

    def __init__(self, outputs: list, cursor: list[int]) -> None:
        super().__init__()
        self.outputs = outputs
        self.cursor = cursor

    def forward(self, *args, **kwargs):
        return self.outputs[self.cursor[0]]


class LayerReplay:
    """Held-out loss of the model from any decoder layer on, earlier layers replayed from a dense pass."""

    def __init__(self, model: nn.Module, batches: torch.Tensor, batch_size: int = 4,
                 max_cache_bytes: int = 2 << 30) -> None:
        self.model, self.batches, self.batch_size = model, batches, batch_size
        self.layers = decoder_layers(model)
        self.cursor = [0]
        self.outputs: list[list] = []
        hidden = getattr(getattr(model, "config", None), "hidden_size", None) or 0
        size = batches.numel() * hidden * 4 * (len(self.layers) if self.layers is not None else 0)
        if self.layers is None or not hidden or size > max_cache_bytes:
            self.layers = None  # too big to cache (or no layer list): every probe runs the full model
            self.dense_loss = mean_loss(model, batches, batch_size)
            return
        self.outputs = [[] for _ in self.layers]
        hooks = [layer.register_forward_hook(self._recorder(i)) for i, layer in enumerate(self.layers)]
        try:
            self.dense_loss = mean_loss(model, batches, batch_size)
        finally:
            for h in hooks:
                h.remove()
        batches_run = -(-len(batches) // batch_size)
        if any(len(outputs) != batches_run for outputs in self.outputs):
            # Not one call per batch (e.g. a list of MoE experts rather than of layers): no replay.
            self.layers, self.outputs = None, []

    def _recorder(self, index: int):
        def record(_module, _inputs, output) -> None:
            self.outputs[index].append(_detach(output))

        return record

    def loss(self, start_layer: int | None) -> float:
        """Mean held-out loss, layers before `start_layer` replayed (None or 0: the whole model runs)."""
        if self.layers is None or not start_layer:
            return mean_loss(self.model, self.batches, self.batch_size)
        with self._replaying(start_layer):
            return mean_loss(self.model, self.batches, self.batch_size, on_batch=self._seek)

    def _seek(self, index: int) -> None:
        self.cursor[0] = index

    @contextmanager
    def _replaying(self, start_layer: int) -> Iterator[None]:
        real = [self.layers[i] for i in range(start_layer)]
        for i in range(start_layer):
            self.layers[i] = _Cached(self.outputs[i], self.cursor)
        try:
            yield
        finally:
            for i, layer in enumerate(real):
                self.layers[i] = layer


def _detach(output):
    if isinstance(output, torch.Tensor):
        return output.detach()
    if isinstance(output, tuple):
        return tuple(_detach(o) for o in output)
    return output
