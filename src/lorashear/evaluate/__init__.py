"""The evaluation stage: perplexity, zero-shot accuracy (lm-eval) and speed of a model.

`evaluate(model, tokenizer, ...)` returns an `EvalResult` (→ JSON object / markdown table).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from lorashear.data import ZERO_SHOT_TASKS
from lorashear.errors import LorashearError
from lorashear.evaluate.perplexity import (
    DEFAULT_SEQ_LEN,
    DEFAULT_WINDOWS,
    PerplexityResult,
    check_windows,
    perplexity,
)
from lorashear.evaluate.report import EvalResult, write_json
from lorashear.evaluate.speed import SpeedComparison, SpeedResult, compare, measure_speed
from lorashear.evaluate.tasks import TASK_SOURCES, check_tasks
from lorashear.evaluate.zeroshot import AVERAGE_METRIC, TaskScore, average, check_limit, run_zero_shot
from lorashear.models import count_parameters

__all__ = [
    "AVERAGE_METRIC",
    "TASK_SOURCES",
    "EvalConfig",
    "EvalResult",
    "PerplexityResult",
    "SpeedComparison",
    "SpeedResult",
    "TaskScore",
    "average",
    "compare",
    "evaluate",
    "evaluate_config",
    "measure_speed",
    "perplexity",
    "run_zero_shot",
    "write_json",
]


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate; validated on creation so bad settings fail before any model work."""

    ppl_corpora: tuple[str, ...] = ("wiki",)
    ppl_windows: int = DEFAULT_WINDOWS
    seq_len: int = DEFAULT_SEQ_LEN
    tasks: tuple[str, ...] = ZERO_SHOT_TASKS
    limit: int | None = None
    speed: bool = False
    batch_size: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "ppl_corpora", tuple(dict.fromkeys(self.ppl_corpora)))
        object.__setattr__(self, "tasks", tuple(check_tasks(list(self.tasks))) if self.tasks else ())
        if self.ppl_corpora:
            check_windows(self.ppl_windows, self.seq_len)
        check_limit(self.limit)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size <= 0:
            raise LorashearError(f"batch size must be a positive integer, got {self.batch_size!r}")


def evaluate(
    model,
    tokenizer,
    *,
    ppl_corpora: Sequence[str] = ("wiki",),
    ppl_windows: int = DEFAULT_WINDOWS,
    tasks: Sequence[str] = ZERO_SHOT_TASKS,
    limit: int | None = None,
    speed: bool = False,
    batch_size: int = 4,
    seq_len: int = DEFAULT_SEQ_LEN,
    model_name: str | None = None,
) -> EvalResult:
    """Perplexity on each corpus, zero-shot accuracy on each task, and (optionally) speed."""
    config = EvalConfig(tuple(ppl_corpora), ppl_windows, seq_len, tuple(tasks), limit, speed, batch_size)
    return evaluate_config(model, tokenizer, config, model_name=model_name)


def evaluate_config(
    model, tokenizer, config: EvalConfig, *, model_name: str | None = None, log: Callable[[str], None] = print
) -> EvalResult:
    """`evaluate` driven by an `EvalConfig`; `log` reports each figure as soon as it is measured."""
    was_training = model.training
    model.eval()
    name = model_name or getattr(model.config, "_name_or_path", "") or type(model).__name__
    result = EvalResult(model=name, params=count_parameters(model), settings=asdict(config))
    try:
        for corpus in config.ppl_corpora:
            result.ppl[corpus] = perplexity(
                model, tokenizer, corpus, windows=config.ppl_windows, seq_len=config.seq_len,
                batch_size=config.batch_size,
            )
            log(f"ppl {corpus}: {result.ppl[corpus].ppl:.3f} ({config.ppl_windows} windows × {config.seq_len} tokens)")
        if config.tasks:
            result.tasks = run_zero_shot(model, tokenizer, config.tasks, limit=config.limit,
                                         batch_size=config.batch_size)
            for task, score in result.tasks.items():
                log(f"{task}: acc {score.acc:.4f}  acc_norm {score.acc_norm:.4f}  (n={score.n})")
        if config.speed:
            result.speed = measure_speed(model)
    finally:
        model.train(was_training)
    return result
