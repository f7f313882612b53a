"""The LHSPG math on one group per call: projection step, multiplicative fade, and the period-end merge."""

from __future__ import annotations

import torch
from torch import nn

from lorashear.importance.base import lora_delta, lora_layers
from lorashear.prune.lhspg.variables import GroupVariables, dot, norm


def step_size(rule: str, x_norm: float, start_norm: float, t: int, period_steps: int) -> float:
    """λ_g at step t of a period of T steps: `remaining` ‖x_g‖/(T − t) (without LoRA this is the fade
    (T−t−1)/(T−t) and ends at 0 exactly); `constant` ‖x_g at the group's first step‖/T (a straight line to 0)."""
    if rule == "remaining":
        return x_norm / (period_steps - t)
    return start_norm / period_steps


def project(variables: GroupVariables, i: int, lam: float, epsilon: float, optimizer=None) -> bool:
    """One LHSPG step of group i: x̃ = [x + s·BA]_g − λ·x_g/‖x_g‖; zero if x̃ᵀx < ε‖x‖², else x_g ← x̃.
    The group's LoRA slices (absorbed) and their optimizer moments become zero. True when x_g is now 0."""
    x = variables.values(i)
    x_norm = norm(x)
    if x_norm == 0.0:  # zeros stay zero
        variables.zero_lora(i, optimizer)
        return True
    trial = [xk + uk - (lam / x_norm) * xk for xk, uk in zip(x, variables.lora_update(i), strict=True)]
    if dot(trial, x) < epsilon * x_norm**2:
        variables.zero(i, optimizer)
        return True
    variables.write(i, trial)
    variables.zero_lora(i, optimizer)
    return False


def fade(variables: GroupVariables, i: int, t: int, period_steps: int) -> None:
    """The authors' released form: multiply x_g and the group's LoRA slices by (T−t−1)/(T−t) (0 at the last step)."""
    variables.scale(i, (period_steps - t - 1) / (period_steps - t))


def merge_lora(model: nn.Module, optimizer=None) -> int:
    """W ← W + s·BA for every LoRA layer, then B = 0 and A, B restart their optimizer state; the function
    is unchanged. Redundant groups' LoRA slices are already zero, so this merges the important groups only."""
    inner = getattr(optimizer, "optimizer", optimizer)
    merged = 0
    with torch.no_grad():
        for layer in lora_layers(model).values():
            delta = lora_delta(layer)
            if delta is None:
                continue
            weight = layer.base_layer.weight
            weight.data += delta.to(weight.dtype)
            done = set(getattr(layer, "merged_adapters", []))
            for adapter in layer.active_adapters:
                if adapter in layer.lora_B and adapter not in done:
                    layer.lora_B[adapter].weight.data.zero_()
                    for factor in (layer.lora_A[adapter].weight, layer.lora_B[adapter].weight):
                        if inner is not None:
                            inner.state.pop(factor, None)  # Adam restarts cleanly (step count included)
            merged += 1
    return merged
