"""`PruneContext`: everything a pruning method may use, built once per run and passed as one object.

Expensive pieces (calibration text, group scores) are made on first use and shared, so the
knowledge analysis and the method score the model once. It is the methods' input only: a method
reports through the `PlanOutcome` its plan returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from lorashear.errors import LorashearError
from lorashear.graph.structures import StructureGraph
from lorashear.importance import (
    CalibrationData,
    Criterion,
    GroupScores,
    ScoreContext,
    get_criterion,
    load_calibration,
)

if TYPE_CHECKING:
    from lorashear.knowledge import KnowledgeResult
    from lorashear.prune.api import PruneConfig


@dataclass
class PruneContext:
    """The model being pruned, its graph, the run's settings, and shared lazily-built inputs."""

    config: PruneConfig
    model: nn.Module
    tokenizer: Any
    graph: StructureGraph
    aliases: dict[str, str]
    log: Callable[[str], None] = print
    knowledge: KnowledgeResult | None = None
    _calibration: CalibrationData | None = None
    _scores: dict[tuple, GroupScores] = field(default_factory=dict)
    _scorers: dict[tuple, Criterion] = field(default_factory=dict)  # what scored (FLAP keeps its statistics there)

    def calibration(self) -> CalibrationData:
        """Calibration batches and held-out text (loaded once)."""
        if self._calibration is None:
            if self.tokenizer is None:
                raise LorashearError(f"method '{self.config.method}' needs calibration text, but the model has no tokenizer")
            self._calibration = load_calibration(self.tokenizer, self.config.calibration)
            self.log(self._calibration.summary())
        return self._calibration

    def calibration_record(self) -> dict | None:
        """What calibration text was used (None when the run needed none)."""
        data = self._calibration
        if data is None:
            return None
        return {"data": list(data.config.data), "samples": len(data.batches), "seq_len": data.config.seq_len,
                "held_out": len(data.held_out), "seed": data.config.seed}

    def scorer(self, criterion: str, options: dict | None = None) -> Criterion:
        """The criterion object that scored with these options (scoring first if needed)."""
        self.scores(criterion, options)
        return self._scorers[_key(criterion, options)]

    def scores(self, criterion: str, options: dict | None = None) -> GroupScores:
        """Scores of every group of the run's kinds by `criterion` with `options` (computed once per pair)."""
        key = _key(criterion, options)
        if key not in self._scores:
            scorer = self._scorers[key] = get_criterion(criterion, **(options or {}))
            batches = self.calibration().batches if scorer.needs_data else None
            ctx = ScoreContext(self.model, self.graph, batches, self.config.batch_size, self.aliases,
                               tuple(self.config.kinds))
            self._scores[key] = scorer.score(ctx)
        return self._scores[key]


def _key(criterion: str, options: dict | None) -> tuple:
    return (criterion, tuple(sorted((options or {}).items())))
