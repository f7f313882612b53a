"""The evaluation stage: perplexity, zero-shot accuracy (lm-eval) and speed of a model.

`evaluate(model, tokenizer, ...)` returns an `EvalResult` (→ JSON object / markdown table).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from lorashear.data import ZERO_SHOT_TASKS
from lorashear.errors import LorashearError
from lorashear.evaluate.estimate import (
    LONG_RUN_SECONDS,
    PPL,
    TASK,
    EvalStep,
    duration,
    forward_tokens_per_s,
    plan_steps,
)
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
from lorashear.evaluate.zeroshot import (
    AVERAGE_METRIC,
    TaskScore,
    average,
    check_limit,
    run_zero_shot,
    zero_shot_scores,
)
from lorashear.models import count_parameters, input_device

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
    "default_limit",
    "evaluate",
    "evaluate_config",
    "measure_speed",
    "perplexity",
    "run_zero_shot",
    "write_json",
]


# Zero-shot documents per task when the user names no limit: every one on a GPU; on a CPU the full
# sets take days (about 69 K requests), so the first 200 of each (±3.5 points of standard error).
CPU_DEFAULT_LIMIT = 200


def default_limit(device: str) -> int | None:
    """Documents per task to score when none is asked for, on this device type ("cpu", "cuda", ...)."""
    return CPU_DEFAULT_LIMIT if device == "cpu" else None


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
    model,
    tokenizer,
    config: EvalConfig,
    *,
    model_name: str | None = None,
    log: Callable[[str], None] = print,
    on_update: Callable[[EvalResult], None] | None = None,
) -> EvalResult:
    """`evaluate` driven by an `EvalConfig`. It logs its stages with a time estimate first, then each
    figure as soon as it is measured, calling `on_update(result)` after every stage (settings["pending"]
    names the stages not run yet), so a killed run keeps what it measured."""
    was_training = model.training
    model.eval()
    name = model_name or getattr(model.config, "_name_or_path", "") or type(model).__name__
    result = EvalResult(model=name, params=count_parameters(model), settings=asdict(config))
    stages = plan_steps(config.ppl_corpora, config.ppl_windows, config.seq_len, config.tasks, config.limit,
                         config.speed)
    pending = result.settings["pending"] = [stage.name for stage in stages]
    if getattr(model, "hf_device_map", None):  # spread over devices (--device-map): where each part ran
        result.settings["device_map"] = {k: str(v) for k, v in model.hf_device_map.items()}
    try:
        seconds = _announce(model, config, stages, log)
        scores = zero_shot_scores(model, tokenizer, config.tasks, limit=config.limit,
                                  batch_size=config.batch_size) if config.tasks else iter(())
        for i, (stage, eta) in enumerate(zip(stages, seconds, strict=True), 1):
            log(f"[{i}/{len(stages)}] {stage.name}: {stage.detail}" + (f" (about {duration(eta)})" if eta else ""))
            if stage.kind == PPL:
                r = result.ppl[stage.key] = perplexity(
                    model, tokenizer, stage.key, windows=config.ppl_windows, seq_len=config.seq_len,
                    batch_size=config.batch_size,
                )
                log(f"ppl {stage.key}: {r.ppl:.3f} on {r.describe()}")
            elif stage.kind == TASK:
                task, score = next(scores)
                result.tasks[task] = score
                log(f"{task}: acc {score.acc:.4f}  acc_norm {score.acc_norm:.4f}  (n={score.n})")
            else:
                result.speed = measure_speed(model)
            pending.remove(stage.name)
            if on_update is not None:
                on_update(result)
    finally:
        model.train(was_training)
    return result


def _announce(model, config: EvalConfig, stages: list[EvalStep], log: Callable[[str], None]) -> list[float | None]:
    """Log the plan and its estimated time (with a note on how to shorten a long one); seconds per stage."""
    if not any(stage.kind in (PPL, TASK) for stage in stages):
        return [None] * len(stages)
    tokens_per_s = forward_tokens_per_s(model, config.batch_size)
    seconds = [stage.tokens / tokens_per_s for stage in stages]
    device = input_device(model).type
    log(f"plan: {len(stages)} stages, {sum(s.tokens for s in stages):,} tokens at ~{tokens_per_s:,.0f} tokens/s "
        f"on {device}: about {duration(sum(seconds))} (a rough estimate)")
    if sum(seconds) > LONG_RUN_SECONDS and config.tasks:
        limit = "every document" if config.limit is None else f"the first {config.limit} documents"
        log(f"note: the zero-shot tasks score {limit} of each task; --limit N scores the first N documents "
            "of each task, --tasks none skips them")
    return seconds
