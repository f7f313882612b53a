"""`prune_model`: model argument → graph → plan → compress → exported folder, as one call.

The `lorashear prune` command and the demo both go through here, so the recipe lives once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lorashear.errors import LorashearError
from lorashear.graph.structures import DEFAULT_KINDS, GROUP_KINDS
from lorashear.prune.plan import PruningPlan


@dataclass
class PruneConfig:
    """What to prune and how; validated on creation so bad input fails before the model loads."""

    model: str
    output: str
    method: str = "random"
    ratio: float = 0.2
    kinds: tuple[str, ...] = DEFAULT_KINDS
    uniform: bool = False
    seed: int = 0
    multiple_of: int = 1  # kept MLP and hidden channels: a multiple of this (kernels; plain exports)
    merge_lora: bool = True  # False keeps the LoRA adapter of an adapter-folder model unmerged (adapter/)
    overwrite: bool = False

    def __post_init__(self) -> None:
        from lorashear.prune import METHODS

        self.kinds = tuple(self.kinds)
        unknown = sorted(set(self.kinds) - set(GROUP_KINDS))
        if unknown:
            raise LorashearError(f"unknown structures {unknown}; choose from {', '.join(GROUP_KINDS)}")
        if not self.kinds:
            raise LorashearError("no structures to prune; name at least one kind")
        if not 0.0 < self.ratio < 1.0:
            raise LorashearError(f"ratio must be in (0, 1), got {self.ratio}")
        if isinstance(self.multiple_of, bool) or not isinstance(self.multiple_of, int) or self.multiple_of < 1:
            raise LorashearError(f"--multiple-of must be a positive integer, got {self.multiple_of!r}")
        if self.method not in METHODS:
            raise LorashearError(f"unknown method '{self.method}'; choose from {', '.join(METHODS)}")


@dataclass
class PruneResult:
    """Where the pruned model went, the plan that made it, and how long each step took."""

    folder: Path
    plan: PruningPlan
    params_before: int
    params_after: int
    seconds: dict[str, float] = field(default_factory=dict)


def tied_aliases(model) -> dict[str, str]:
    """state_dict names that share a tensor with an earlier name (tied embeddings) -> that name."""
    first: dict[int, str] = {}
    aliases = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in first:
            aliases[name] = first[id(t)]
        else:
            first[id(t)] = name
    return aliases


def prune_model(config: PruneConfig, log: Callable[[str], None] = print) -> PruneResult:
    """Load, discover groups, plan with `config.method`, compress and export to `config.output`."""
    from lorashear.compress import compress, count_params, export
    from lorashear.graph import build_graph
    from lorashear.models import load_model, load_tokenizer
    from lorashear.prune import METHODS

    out = Path(config.output)
    if out.exists() and any(out.iterdir()) and not config.overwrite:
        raise LorashearError(f"{out} exists and is not empty; choose another folder or pass --overwrite")
    seconds: dict[str, float] = {}
    model = load_model(config.model, device="cpu")
    if not config.merge_lora and not hasattr(model, "peft_config"):
        raise LorashearError(
            f"--lora keeps the model's LoRA adapter unmerged, but {config.model} has none; "
            "pass a peft adapter folder (with adapter_config.json) or drop --lora"
        )
    try:
        tokenizer = load_tokenizer(config.model)
    except LorashearError as err:  # a bare model folder: export without a tokenizer
        log(f"warning: {err}; the pruned folder will have no tokenizer")
        tokenizer = None

    start = time.perf_counter()
    graph = build_graph(model, config.kinds)
    seconds["discover"] = time.perf_counter() - start

    plan = METHODS[config.method](
        graph, config.ratio, list(config.kinds), uniform=config.uniform, seed=config.seed,
        aliases=tied_aliases(model), multiple_of=config.multiple_of,
    )
    params_before = count_params(model)
    start = time.perf_counter()
    compress(model, plan.groups)
    seconds["compress"] = time.perf_counter() - start

    start = time.perf_counter()
    folder = export(model, tokenizer, out, plan.groups, params_before, merge_lora=config.merge_lora,
                    overwrite=config.overwrite, extra_files={"plan.json": json.dumps(plan.to_dict())})
    seconds["export"] = time.perf_counter() - start
    log(f"removed {plan.params_removed:,} of {plan.params_total:,} parameters "
        f"({plan.achieved_ratio:.2%}) -> {folder}")
    return PruneResult(folder, plan, params_before, count_params(model), seconds)
