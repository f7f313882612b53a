"""Knowledge-distribution analysis (LoRAShear's Algorithm 3): which clusters must not be pruned.

A cluster is one layer's attention groups, one layer's MLP groups, or all hidden channels. For
each cluster alone, its lowest-scored groups are zeroed at each ratio in P (in place, restored
after), and the loss on held-out calibration text is compared with the full model's. Clusters
whose loss moves most carry knowledge the rest cannot stand in for: they become unprunable.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from lorashear.compress.core import zeroed
from lorashear.errors import LorashearError
from lorashear.graph.structures import (
    ATTENTION_BLOCK,
    HIDDEN_CHANNEL,
    KV_GROUP,
    MLP_BLOCK,
    MLP_CHANNEL,
    QUERY_HEAD,
    StructureGraph,
)
from lorashear.importance.base import GroupScores
from lorashear.io import write_atomic
from lorashear.knowledge.replay import LayerReplay

ATTENTION, MLP, HIDDEN = "attention", "mlp", "hidden"
CLUSTER_KIND = {KV_GROUP: ATTENTION, QUERY_HEAD: ATTENTION, ATTENTION_BLOCK: ATTENTION,
                MLP_CHANNEL: MLP, MLP_BLOCK: MLP, HIDDEN_CHANNEL: HIDDEN}
# --unprunable: data-driven (auto), none, the fixed rule of LoRAPrune/LLM-Pruner, or the top γ of clusters.
RULES = ("auto", "none", "fixed", "ratio")
KNOWLEDGE_REASON = "knowledge"


@dataclass(frozen=True)
class KnowledgeConfig:
    """How the analysis probes clusters and which become unprunable."""

    rule: str = "auto"
    unprunable_ratio: float | None = None  # γ: with rule "ratio", this fraction of clusters is kept whole
    ratios: tuple[float, ...] = (0.25, 0.5)  # P: fractions of a cluster's groups zeroed when probing it
    criterion: str = "wanda-sp"  # scores the groups inside a cluster (the method's own when it has one)
    outlier_mads: float = 3.0  # auto: deviation above median + this many (scaled) MADs
    fixed_first: float = 0.1  # fixed: this fraction of the first layers (and the last layer)

    def __post_init__(self) -> None:
        if self.unprunable_ratio is not None and self.rule == "auto":
            object.__setattr__(self, "rule", "ratio")
        if self.rule not in RULES:
            raise LorashearError(f"--unprunable must be one of {', '.join(RULES)}, got {self.rule!r}")
        if self.rule == "ratio":
            gamma = self.unprunable_ratio
            if gamma is None or not 0.0 <= gamma < 1.0:
                raise LorashearError(f"--unprunable-ratio γ must be in [0, 1), got {gamma!r}")
        object.__setattr__(self, "ratios", tuple(float(r) for r in self.ratios))
        if not self.ratios or any(not 0.0 < r <= 1.0 for r in self.ratios):
            raise LorashearError(f"knowledge ratios must be in (0, 1], got {list(self.ratios)}")

    @property
    def probes(self) -> bool:
        """Whether the rule needs the (data-driven) probe at all."""
        return self.rule in ("auto", "ratio")


@dataclass
class Cluster:
    """A set of groups probed together: one layer's attention or MLP, or the hidden channels."""

    name: str
    kind: str
    layer: int | None
    groups: list[int]  # indices in graph.groups
    deviation: dict[str, float] = field(default_factory=dict)  # ratio -> loss increase (nats)
    unprunable: bool = False

    @property
    def mean_deviation(self) -> float | None:
        """Mean loss increase over the probed ratios; None when the cluster was not probed."""
        return statistics.fmean(self.deviation.values()) if self.deviation else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["groups"] = len(self.groups)
        d["mean_deviation"] = self.mean_deviation
        return d


@dataclass
class KnowledgeResult:
    """The analysis's table: every cluster with its deviation and verdict."""

    clusters: list[Cluster]
    dense_loss: float | None
    settings: dict
    seconds: float = 0.0

    @property
    def unprunable(self) -> list[Cluster]:
        return [c for c in self.clusters if c.unprunable]

    def to_dict(self) -> dict:
        return {"dense_loss": self.dense_loss, "settings": self.settings, "seconds": self.seconds,
                "unprunable": [c.name for c in self.unprunable], "clusters": [c.to_dict() for c in self.clusters]}

    def summary(self) -> str:
        names = ", ".join(c.name for c in self.unprunable) or "none"
        return f"knowledge analysis ({self.settings['rule']}): {len(self.unprunable)} of {len(self.clusters)} clusters unprunable: {names}"

    def save(self, path: str | Path) -> Path:
        write_atomic(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)


def clusters_of(graph: StructureGraph, kinds: tuple[str, ...]) -> list[Cluster]:
    """The clusters of the prunable groups of `kinds`, in layer order (hidden channels last)."""
    by_key: dict[tuple[str, int | None], list[int]] = {}
    for i, g in enumerate(graph.groups):
        if g.prunable and g.kind in kinds:
            by_key.setdefault((CLUSTER_KIND[g.kind], g.layer), []).append(i)
    order = {ATTENTION: 0, MLP: 1, HIDDEN: 2}
    keys = sorted(by_key, key=lambda k: (k[1] is None, k[1] or 0, order[k[0]]))
    return [Cluster(f"{kind}" if layer is None else f"layer{layer}.{kind}", kind, layer, by_key[(kind, layer)])
            for kind, layer in keys]


def probe(
    model: nn.Module,
    graph: StructureGraph,
    clusters: list[Cluster],
    scores: GroupScores,
    held_out: torch.Tensor,
    ratios: tuple[float, ...],
    batch_size: int = 4,
) -> float:
    """Fill every cluster's deviation (loss increase per ratio); returns the full model's loss."""
    replay = LayerReplay(model, held_out, batch_size)
    dense = replay.dense_loss
    # A one-group cluster is not probed: selection always keeps one group per layer and kind, so
    # nothing of it could be pruned, and zeroing it whole would not be comparable with the others.
    probed = [c for c in clusters if len(c.groups) > 1]
    for cluster in tqdm(probed, desc="knowledge analysis", unit="cluster"):
        ranked = scores.ranked(cluster.groups)
        for ratio in ratios:
            # At least one group; never all of them.
            k = min(max(1, round(ratio * len(ranked))), len(ranked) - 1)
            with zeroed(model, [graph.groups[i] for i in ranked[:k]]):
                cluster.deviation[f"{ratio:g}"] = replay.loss(cluster.layer) - dense
    return dense


def choose_unprunable(clusters: list[Cluster], config: KnowledgeConfig, num_layers: int) -> None:
    """Mark clusters unprunable by the configured rule (deviations must be filled for auto/ratio)."""
    for c in clusters:
        c.unprunable = False
    if config.rule == "none" or not clusters:
        return
    if config.rule == "fixed":
        first = max(1, round(config.fixed_first * num_layers))
        for c in clusters:
            c.unprunable = c.layer is not None and (c.layer < first or c.layer == num_layers - 1)
        return
    measured = [c for c in clusters if c.mean_deviation is not None]
    ranked = sorted(measured, key=lambda c: c.mean_deviation, reverse=True)
    if config.rule == "ratio":
        for c in ranked[: math.floor(config.unprunable_ratio * len(clusters))]:
            c.unprunable = True
        return
    # auto: robust outliers per cluster kind (attention and MLP deviations live on different scales).
    for kind in {c.kind for c in measured}:
        devs = [c.mean_deviation for c in measured if c.kind == kind]
        if len(devs) < 3:
            continue
        med = statistics.median(devs)
        mad = 1.4826 * statistics.median(abs(d - med) for d in devs)
        for c in measured:
            if c.kind == kind and c.mean_deviation > med + config.outlier_mads * max(mad, 1e-6):
                c.unprunable = True


def analyze_knowledge(
    model: nn.Module,
    graph: StructureGraph,
    kinds: tuple[str, ...],
    config: KnowledgeConfig,
    scores: GroupScores | None = None,
    held_out: torch.Tensor | None = None,
    batch_size: int = 4,
    log: Callable[[str], None] = print,
) -> KnowledgeResult:
    """Probe every cluster (for the data-driven rules) and decide which are unprunable."""
    start = time.perf_counter()
    clusters = clusters_of(graph, kinds)
    dense = None
    if config.probes:
        if scores is None or held_out is None or len(held_out) == 0:
            raise LorashearError("the knowledge analysis needs group scores and held-out calibration text")
        dense = probe(model, graph, clusters, scores, held_out, config.ratios, batch_size)
    num_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None) or (
        1 + max((g.layer for g in graph.groups if g.layer is not None), default=0))
    choose_unprunable(clusters, config, num_layers)
    settings = {**asdict(config), "kinds": list(kinds), "scores": scores.settings if scores else None,
                "held_out_tokens": int(held_out.numel()) if held_out is not None and config.probes else 0}
    result = KnowledgeResult(clusters, dense, settings, time.perf_counter() - start)
    log(result.summary())
    return result


def load_knowledge(path: str | Path, graph: StructureGraph, kinds: tuple[str, ...]) -> KnowledgeResult:
    """An earlier analysis's verdict (its `knowledge.json`) on this graph, matched cluster by cluster."""
    path = Path(path)
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise LorashearError(f"cannot read the knowledge analysis {path}: {err}") from err
    clusters = clusters_of(graph, kinds)
    mine = {c.name: len(c.groups) for c in clusters}
    theirs = {c["name"]: c["groups"] for c in saved["clusters"]}
    if mine != theirs:
        raise LorashearError(f"{path} analysed other clusters than this model has for {', '.join(kinds)}; "
                             "rerun the analysis on this model with these structures")
    records = {c["name"]: c for c in saved["clusters"]}
    for cluster in clusters:
        record = records[cluster.name]
        cluster.deviation, cluster.unprunable = dict(record["deviation"]), record["unprunable"]
    # "from" names where the verdict was made: a file that was itself taken from another keeps that one.
    return KnowledgeResult(clusters, saved["dense_loss"], {"from": str(path), **saved["settings"]}, saved["seconds"])


def mark_unprunable(graph: StructureGraph, result: KnowledgeResult) -> int:
    """Record the verdict on the graph's groups (`unprunable="knowledge"`); returns how many were marked."""
    marked = 0
    for cluster in result.unprunable:
        for i in cluster.groups:
            graph.groups[i].unprunable = KNOWLEDGE_REASON
            marked += 1
    return marked
