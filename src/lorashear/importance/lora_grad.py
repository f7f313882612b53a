"""`lora-grad` (LoRAPrune): the gradient of a frozen weight estimated from its LoRA factors' gradients.

For a LoRA linear y = Wx + s·BAx only A and B train. One gradient step of size η moves s·BA by
−η·s·(∇B·A + B·∇A) + η²·s·∇B·∇A, so G = s·(∇B·A + B·∇A) is the first-order change of the effective
weight per unit step: LoRAPrune's stand-in for ∇W (with `subtract_cross`, G = s·(∇B·A + B·∇A − ∇B·∇A),
the released code's form: exactly the change of s·BA after a step with η = 1). Element scores are
|G ⊙ (W + s·BA)|, each matrix's divided by its L2 norm (LoRAPrune), then summed over a group's slices.

The scaling s is included so G lives on the scale of the effective weight W + s·BA (the released code
leaves it out); with the default L2 normalisation a per-matrix constant cancels, so rankings agree.
Only weights that carry LoRA score: a group's norm, embedding and bias slices contribute nothing.
Gradients are the LoRA factors' own (`gradients="present"`: whatever the training loop left in
.grad) or accumulated here over calibration batches with only the LoRA factors trainable; no
gradient of a frozen weight is ever made. G has W's shape and lives for one layer at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from lorashear.distributed import full_tensor, is_dtensor, local_rows
from lorashear.errors import LorashearError
from lorashear.importance.base import Criterion, LocalRows, ScoreContext, lora_layers, register
from lorashear.importance.taylor import accumulate_gradients  # one gradient accumulator for all criteria

SOURCES = ("calibration", "present")


@register
@dataclass
class LoraGrad(Criterion):
    """Σ_g |G ⊙ (W + s·BA)| with G = s·(∇B·A + B·∇A) (see the module docstring), matrices L2-normalised."""

    name: ClassVar[str] = "lora-grad"
    needs_data: ClassVar[bool] = True
    normalize: str = "l2"
    subtract_cross: bool = False
    gradients: str = "calibration"  # or "present": read the .grad the training loop left on A and B

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gradients not in SOURCES:
            raise LorashearError(f"lora-grad: gradients must be one of {', '.join(SOURCES)}, got {self.gradients!r}")
        self.needs_data = self.gradients == "calibration"  # the loop's gradients need no data of their own

    def elements(self, ctx: ScoreContext) -> Iterator[tuple[str, torch.Tensor]]:
        layers = lora_layers(ctx.model)
        grads = self._gradients(ctx, layers)
        for name, layer in layers.items():
            estimate = lora_gradient_estimate(layer, grads, self.subtract_cross)
            if estimate is not None:
                g, w_eff = estimate
                weight = layer.base_layer.weight
                if is_dtensor(weight):  # this process's rows of G and W + s·BA (FSDP)
                    yield name, LocalRows((g * w_eff).abs(), local_rows(weight)[1], weight.shape)
                else:
                    yield name, (g * w_eff).abs()

    def _gradients(self, ctx: ScoreContext, layers: dict[str, nn.Module]) -> dict[nn.Parameter, torch.Tensor]:
        """LoRA factor -> its gradient (float32), from .grad or accumulated over calibration batches."""
        factors = [p for layer in layers.values() for a in _adapters(layer)
                   for p in (layer.lora_A[a].weight, layer.lora_B[a].weight)]
        if not factors:
            raise LorashearError(
                "criterion 'lora-grad' reads the gradients of LoRA factors, but the model has no active LoRA adapter; "
                "attach LoRA (a peft adapter folder or a trained method) or choose another criterion"
            )
        if self.gradients == "present":
            grads = {p: p.grad for p in factors if p.grad is not None}  # float32 in lora_gradient_estimate
            if not grads:
                raise LorashearError("lora-grad: no LoRA factor has a gradient; call it after backward()")
            return grads
        names = {id(p): n for n, p in ctx.model.named_parameters()}
        by_name = accumulate_gradients(ctx.model, ctx.require_batches(self.name), {names[id(p)] for p in factors},
                                       ctx.batch_size)
        return {p: by_name[names[id(p)]] for p in factors if names[id(p)] in by_name}


def lora_gradient_estimate(
    layer: nn.Module, grads: dict[nn.Parameter, torch.Tensor], subtract_cross: bool = False
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(G, W + s·BA) of a peft LoRA layer in its base weight's layout, float32; None without gradients.

    G = Σ_adapters s·(∇B·A + B·∇A [− ∇B·∇A]); adapters without a gradient (frozen) add nothing to G.
    """
    weight = layer.base_layer.weight
    g_sum = None
    w_eff = local_rows(weight)[0].float().clone()
    with torch.no_grad():
        for adapter in _adapters(layer):
            a, b = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
            s = float(layer.scaling[adapter])
            # Sharded (FSDP): B's rows are W's, held here; A (r × in) and its gradient are gathered whole.
            a32, b32 = full_tensor(a.detach()).float(), local_rows(b)[0].float()
            delta = s * (b32 @ a32)
            ga, gb = grads.get(a), grads.get(b)
            ga = None if ga is None else full_tensor(ga).float()
            gb = None if gb is None else local_rows(gb)[0].float()
            g = None
            if ga is not None or gb is not None:
                ga = torch.zeros_like(a32) if ga is None else ga
                gb = torch.zeros_like(b32) if gb is None else gb
                g = gb @ a32 + b32 @ ga
                if subtract_cross:
                    g -= gb @ ga
                g *= s
            if getattr(layer, "fan_in_fan_out", False):  # W is stored as (BA)ᵀ (gpt2's Conv1D)
                if is_dtensor(weight):
                    raise LorashearError("lora-grad on sharded weights handles Linear layers only (not Conv1D)")
                delta = delta.T
                g = None if g is None else g.T
            w_eff += delta
            if g is not None:
                g_sum = g if g_sum is None else g_sum + g
    return None if g_sum is None else (g_sum, w_eff)


def _adapters(layer: nn.Module) -> list[str]:
    """The layer's active, unmerged linear LoRA adapters (merged ones are inside W; embeddings have no lora_A)."""
    merged = set(getattr(layer, "merged_adapters", []))
    return [a for a in layer.active_adapters if a in layer.lora_A and a not in merged]
