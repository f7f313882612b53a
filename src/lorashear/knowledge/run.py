"""The knowledge analysis as a stage of its own: a model argument in, a `KnowledgeResult` out.

`lorashear knowledge` and the pipeline's knowledge stage call `run_knowledge` (or `reuse_knowledge` for an
earlier analysis's knowledge.json). `lorashear prune` runs the same `analyze_knowledge` inside its own run,
on the scores its plan reuses (`prune.api.knowledge_stage`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from lorashear.errors import LorashearError
from lorashear.graph import build_graph
from lorashear.graph.structures import GROUP_KINDS, StructureGraph
from lorashear.importance import ScoreContext, get_criterion, load_calibration
from lorashear.importance.calibration import CalibrationConfig
from lorashear.knowledge.analysis import KnowledgeConfig, KnowledgeResult, analyze_knowledge, load_knowledge
from lorashear.models import Placement, load_to_edit, load_tokenizer, resolve_dtype, tied_aliases


def check_knowledge(config: KnowledgeConfig, calibration: CalibrationConfig, criterion_options: dict | None = None) -> None:
    """Refuse, before any model work, an analysis that cannot run: its probe criterion (and options), no held-out text."""
    if config.probes:
        get_criterion(config.criterion, **(criterion_options or {}))  # unknown criterion or option: fail now
        if calibration.held_out < 1:
            raise LorashearError("the knowledge analysis needs held-out text: --knowledge-samples must be ≥ 1")


def run_knowledge(model: str, kinds: Sequence[str], config: KnowledgeConfig, calibration: CalibrationConfig, *,
                  criterion_options: dict | None = None, dtype: str = "auto", batch_size: int = 4,
                  placement: Placement | None = None, log: Callable[[str], None] = print) -> KnowledgeResult:
    """Probe the clusters of `model`'s groups of `kinds` as `config` asks: its probe criterion (with
    `criterion_options`) ranks each cluster's groups, the loss is measured on `calibration`'s held-out text.
    `placement`: the model spread over several devices (its weights must all be on them: probes zero them)."""
    kinds = _check_kinds(kinds)
    check_knowledge(config, calibration, criterion_options)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LorashearError(f"--batch-size must be a positive integer, got {batch_size!r}")
    loaded, graph = _model_and_graph(model, kinds, dtype, placement)
    scores = held_out = None
    if config.probes:
        tokenizer = load_tokenizer(model)

        def text():
            data = load_calibration(tokenizer, calibration)
            log(data.summary())
            return data

        scorer = get_criterion(config.criterion, **(criterion_options or {}))
        data = text() if scorer.needs_data else None  # as `prune` loads it: before scoring only when scoring reads it
        context = ScoreContext(loaded, graph, data.batches if data is not None else None, batch_size,
                               tied_aliases(loaded), kinds)
        scores = scorer.score(context)
        held_out = (data or text()).held_out
    result = analyze_knowledge(loaded, graph, kinds, config, scores, held_out, batch_size, log)
    result.settings["model"] = model
    return result


def reuse_knowledge(model: str, kinds: Sequence[str], source: str | Path, dtype: str = "auto",
                    log: Callable[[str], None] = print) -> KnowledgeResult:
    """An earlier analysis's verdict (its knowledge.json), checked against `model`'s clusters of `kinds`."""
    kinds = _check_kinds(kinds)
    _, graph = _model_and_graph(model, kinds, dtype, None)
    result = load_knowledge(source, graph, kinds)
    log(result.summary())
    result.settings["model"] = model
    return result


def _check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    kinds = tuple(kinds)
    unknown = sorted(set(kinds) - set(GROUP_KINDS))
    if unknown or not kinds:
        raise LorashearError(f"unknown structures {unknown}; choose from {', '.join(GROUP_KINDS)}")
    return kinds


def _model_and_graph(model: str, kinds: tuple[str, ...], dtype: str, placement: Placement | None) -> tuple:
    """The loaded model and its graph; a model spread over devices has its graph traced from its skeleton (the same
    names and shapes, no dispatch hooks in the trace)."""
    resolve_dtype(dtype)  # an unknown name, or a dtype this device cannot run, fails before the load
    loaded, shapes = load_to_edit(model, dtype, placement, "the knowledge analysis")
    graph: StructureGraph = build_graph(shapes, kinds)
    return loaded, graph
