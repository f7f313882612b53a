"""Degradation-driven sampling weights over data categories (LoRAShear's dynamic recovery).

The rule (Sheared-LLaMA's dynamic batch loading, DoReMi's exponentiated update):
    excess loss   Δ_i = max(loss_i − reference_i, 0)      (pruned vs dense, held-out data)
    update        α_i ← α_i · exp(η · Δ_i), then normalise
    floor         α ← (1 − c) · α + c / n                 (every category keeps ≥ c/n)
Categories the pruning hurt most get more samples; the floor keeps the mix balanced.
`uniform` mode keeps α = 1/n (the fixed-mix baseline) but still records the losses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass
class DynamicMixture:
    """Sampling weights over named categories, updated from per-category excess loss."""

    names: Sequence[str]
    eta: float = 1.0
    smoothing: float = 0.2
    dynamic: bool = True
    weights: list[float] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)  # one record per update, for logs and plots

    def __post_init__(self) -> None:
        self.names = list(self.names)
        if not self.names:
            raise ValueError("a mixture needs at least one category")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"category names must be unique: {self.names}")
        if not self.weights:
            self.weights = [1.0 / len(self.names)] * len(self.names)

    @property
    def floor(self) -> float:
        """The least weight any category can have."""
        return self.smoothing / len(self.names)

    def update(self, losses: Mapping[str, float], reference: Mapping[str, float], step: int = 0) -> list[float]:
        """Apply one update from the pruned model's and the dense model's held-out losses; return the weights."""
        excess = [max(losses[n] - reference[n], 0.0) for n in self.names]
        if self.dynamic:
            # Log space: the products of many updates would underflow.
            logits = [math.log(w) + self.eta * d for w, d in zip(self.weights, excess, strict=True)]
            top = max(logits)
            raw = [math.exp(v - top) for v in logits]
            total = sum(raw)
            n = len(self.names)
            self.weights = [(1.0 - self.smoothing) * r / total + self.smoothing / n for r in raw]
        self.history.append(
            {
                "step": step,
                "loss": dict(losses),
                "reference": dict(reference),
                "excess": dict(zip(self.names, excess, strict=True)),
                "weights": dict(zip(self.names, self.weights, strict=True)),
            }
        )
        return list(self.weights)

    def state_dict(self) -> dict:
        return {"names": list(self.names), "weights": list(self.weights), "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        if list(state["names"]) != list(self.names):
            raise ValueError(f"checkpoint categories {state['names']} differ from this run's {self.names}")
        self.weights = list(state["weights"])
        self.history = list(state["history"])
