"""`evaluate_many`: several models evaluated one at a time, then timed side by side where they fit.

The one path `lorashear eval A B ...`, the pipeline's evaluate stage and `lorashear demo` (through the
pipeline) take: no two models are loaded for quality figures, and the speed comparison alternates them
only when their weights fit together (`compare_models`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

import torch

from lorashear.errors import LorashearError
from lorashear.evaluate import evaluate_config
from lorashear.evaluate.report import EvalResult
from lorashear.evaluate.speed import SpeedComparison, compare_models
from lorashear.models import (
    Placement,
    count_parameters,
    default_device,
    load_model,
    load_tokenizer,
    release_memory,
)


@dataclass
class ManyResults:
    """Each model's figures (in the order given), its size, and the side-by-side timing (None: not asked)."""

    results: dict[str, EvalResult]
    sizes: dict[str, dict]  # name -> {"path", "params" (base model), "weights_bytes"}
    speed: SpeedComparison | None


def evaluate_many(
    models: Mapping[str, str],
    config,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype = "auto",
    placement: Placement | None = None,
    speed: bool | None = None,
    saved: Callable[[str], EvalResult | None] = lambda name: None,
    on_result: Callable[[str, EvalResult], None] = lambda name, result: None,
    log: Callable[[str], None] = print,
    **speed_settings,
) -> ManyResults:
    """Evaluate `models` (name -> model argument) on `config` (an `EvalConfig`; its own speed flag is not used
    per model), each loaded alone and freed before the next; `saved(name)` may hand back a result an earlier
    run kept (the model is still loaded once, for its size), `on_result` sees each new one. Then, with `speed`
    (default: `config.speed`), all are timed side by side: `compare_models` with `speed_settings` (rounds, ...).
    `placement`: each model spread over the devices (`models.Placement`; not timed then)."""
    names = list(models)
    if placement is not None and (config.speed if speed is None else speed):
        raise LorashearError("models spread over devices (--device-map) are not timed: time models that fit one device")
    device = torch.device(device) if device is not None else default_device()
    per_model = dataclasses.replace(config, speed=False)
    results, sizes = {}, {}
    for name, spec in models.items():
        model = load_model(spec, device=None if placement is not None else device, dtype=dtype, placement=placement)
        sizes[name] = {"path": spec, "params": count_parameters(model, include_lora=False),
                       "weights_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}
        result = saved(name)
        if result is not None:
            log(f"evaluate: {name} already measured")
        else:
            log(f"evaluate: {name} ({spec})" if name != spec else f"evaluate: {name}")
            result = evaluate_config(model, load_tokenizer(spec), per_model, model_name=name, log=log)
            on_result(name, result)
        results[name] = result
        del model  # one model at a time: freed before the next one loads
        release_memory(device)
    timing = None
    if config.speed if speed is None else speed:
        log(f"evaluate: timing {', '.join(names)} side by side")
        loaders = {name: partial(load_model, spec, device=device, dtype=dtype) for name, spec in models.items()}
        weights = {name: size["weights_bytes"] for name, size in sizes.items()}
        timing = compare_models(loaders, weights, device, log=log, **speed_settings)
    return ManyResults(results, sizes, timing)
