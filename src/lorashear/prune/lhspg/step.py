"""The LHSPG math on many groups per call: projection step, multiplicative fade, and the period-end merge."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lorashear.distributed import is_dtensor, local_rows
from lorashear.importance.base import lora_delta, lora_layers
from lorashear.prune.variables import GroupVariables, sum_groups
from lorashear.train.sharding import merge_layer_rows_

Number = float | torch.Tensor
# Elements of x one many-group call processes at once: ~6 float32/float64 temporaries each (≈ 100 MB at 2^22;
# measured at 0.9B in bf16, 2^25 put the period's projections 0.8 GB above the weights, 0.9 bytes/parameter)
CHUNK_ELEMENTS = 1 << 22
StepSizes = Callable[[list[int], torch.Tensor], torch.Tensor]


def step_size(rule: str, x_norm: Number, start_norm: Number, t: int, period_steps: int) -> Number:
    """λ_g at step t of a period of T steps: `remaining` ‖x_g‖/(T − t) (without LoRA this is the fade
    (T−t−1)/(T−t) and ends at 0 exactly); `constant` ‖x_g at the group's first step‖/T (a straight line to 0).
    Floats or tensors of many groups' norms alike."""
    if rule == "remaining":
        return x_norm / (period_steps - t)
    return start_norm / period_steps


def project(variables: GroupVariables, i: int, lam: float, epsilon: float, optimizer=None) -> bool:
    """One LHSPG step of group i: x̃ = [x + s·BA]_g − λ·x_g/‖x_g‖; zero if x̃ᵀx < ε‖x‖², else x_g ← x̃.
    The group's LoRA slices (absorbed) and their optimizer moments become zero. True when x_g is now 0."""
    return bool(project_many(variables, [i], lambda _, norms: torch.full_like(norms, lam), epsilon, optimizer))


def project_many(variables: GroupVariables, indices: list[int], step_sizes: StepSizes, epsilon: float,
                 optimizer=None) -> list[int]:
    """`project` of many groups, a wave of disjoint groups at a time, each tensor read and written once per
    wave; `step_sizes(wave, norms)` gives λ of the wave's groups from their ‖x_g‖ (float64). The groups now 0.
    At most `CHUNK_ELEMENTS` elements of x are processed at once (their float32/float64 temporaries): chunks
    in group order, as the waves are, so the result is the group-by-group one."""
    zeroed: list[int] = []
    waves = [wave for chunk in variables.chunks(indices, CHUNK_ELEMENTS) for wave in variables.waves(chunk)]
    for wave, lines in waves:
        xs = [part.read() for part in lines]
        norms = sum_groups(lines, [x.double().square() for x in xs], len(wave)).sqrt()
        lam = step_sizes(wave, norms)
        shrink = torch.where(norms > 0, lam / norms.clamp_min(torch.finfo(torch.float64).tiny), 0.0).float()
        trials = [x + part.lora_update() - shrink[part.owner, None] * x for part, x in zip(lines, xs, strict=True)]
        inner = sum_groups(lines, [t.double() * x.double() for t, x in zip(trials, xs, strict=True)], len(wave))
        zero = (norms == 0) | (inner < epsilon * norms**2)  # zeros stay zero; the half-space test
        for part, x, trial in zip(lines, xs, trials, strict=True):
            part.write(torch.where(zero[part.owner, None], 0.0, trial), x)
        variables.zero_lora_many(wave, optimizer)  # absorbed (a later wave reads these factors)
        zeroed += [i for i, z in zip(wave, zero.tolist(), strict=True) if z]
    return zeroed


def fade(variables: GroupVariables, i: int, t: int, period_steps: int) -> None:
    """The authors' released form: multiply x_g and the group's LoRA slices by (T−t−1)/(T−t) (0 at the last step)."""
    fade_many(variables, [i], t, period_steps)


def fade_many(variables: GroupVariables, indices: list[int], t: int, period_steps: int) -> None:
    """`fade` of many groups at once."""
    variables.scale_many(indices, (period_steps - t - 1) / (period_steps - t))


def merge_lora(model: nn.Module, optimizer=None) -> int:
    """W ← W + s·BA (summed in float32, rounded once to W's dtype) for every LoRA layer, then B = 0 and A, B restart their optimizer state; the function
    is unchanged. Redundant groups' LoRA slices are already zero, so this merges the important groups only."""
    inner = getattr(optimizer, "optimizer", optimizer)
    merged = 0
    with torch.no_grad():
        for layer in lora_layers(model).values():
            weight = layer.base_layer.weight
            if is_dtensor(weight):  # sharded: each process its rows (sharding.merge_lora_ of this one layer)
                merge_layer_rows_(layer)
            else:
                delta = lora_delta(layer)
                if delta is None:
                    continue
                weight.data.copy_((weight.data.float() + delta.float()).to(weight.dtype))  # rounded once (bf16 bases)
            done = set(getattr(layer, "merged_adapters", []))
            for adapter in layer.active_adapters:
                if adapter in layer.lora_B and adapter not in done:
                    local_rows(layer.lora_B[adapter].weight)[0].zero_()
                    for factor in (layer.lora_A[adapter].weight, layer.lora_B[adapter].weight):
                        if inner is not None:
                            inner.state.pop(factor, None)  # Adam restarts cleanly (step count included)
            merged += 1
    return merged
