"""LoRAPrune's cubic sparsity schedule (the released code's `schedule_sparsity_ratio` with initial ratio 0)."""

from __future__ import annotations


def cubic_ratio(step: int, total: int, target: float, warmup: float = 0.1, cooldown: float = 0.1) -> float:
    """Ratio to mask at the 0-based optimiser step `step` of `total`: 0 while step ≤ warmup·total, `target`
    once step > total − cooldown·total, between them target·(1 − (1 − (step − warmup·total)/span)³) with
    span = total·(1 − warmup − cooldown): fast at first, flattening as the target nears."""
    # rounded so that 10% of 30 steps is 3 steps, not 3.0000000000000004
    start, end = round(warmup * total, 9), round(total - cooldown * total, 9)
    if step <= start:
        return 0.0
    if step > end:
        return target
    remaining = 1.0 - (step - start) / (end - start)
    return target * (1.0 - remaining**3)
