"""Importance: A registered criterion gives every group of the graph one score.

    criterion = get_criterion("taylor", variant="vector")
    scores = criterion.score(ScoreContext(model, graph, batches=calibration.batches))

Criteria (one module each): `magnitude`, `taylor` (LLM-Pruner), `wanda-sp`, `flap` (whose
`flap.compensate` adds FLAP's bias compensation to the model before compress), and LoRAShear's
LoRA-product proxies in `lora` (`lora-taylor`, `lora-taylor2`, `lora-cos` and their mix `lhspg`),
LoRAPrune's LoRA-gradient estimate in `lora_grad` (`lora-grad`). A new criterion is a `Criterion`
subclass that yields element scores per parameter, `@register`ed.
"""

from lorashear.importance import flap, lora, lora_grad, magnitude, taylor, wanda  # noqa: F401  (register the criteria)
from lorashear.importance.base import (
    CRITERIA,
    Criterion,
    GroupScores,
    ScoreContext,
    aggregate,
    effective_weights,
    get_criterion,
    lora_delta,
    lora_layers,
    reduce_scores,
    register,
)
from lorashear.importance.calibration import (
    CalibrationConfig,
    CalibrationData,
    InputStats,
    collect_input_stats,
    load_calibration,
    mean_loss,
)

__all__ = [
    "CRITERIA",
    "CalibrationConfig",
    "CalibrationData",
    "Criterion",
    "GroupScores",
    "InputStats",
    "ScoreContext",
    "aggregate",
    "collect_input_stats",
    "effective_weights",
    "get_criterion",
    "load_calibration",
    "lora_delta",
    "lora_layers",
    "mean_loss",
    "reduce_scores",
    "register",
]
