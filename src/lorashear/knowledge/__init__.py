"""Knowledge-distribution analysis: find the clusters (layer attention / MLP) that must not be pruned."""

from lorashear.knowledge.analysis import (
    KNOWLEDGE_REASON,
    RULES,
    Cluster,
    KnowledgeConfig,
    KnowledgeResult,
    analyze_knowledge,
    choose_unprunable,
    clusters_of,
    load_knowledge,
    mark_unprunable,
    probe,
)
from lorashear.knowledge.plot import heatmap
from lorashear.knowledge.run import check_knowledge, reuse_knowledge, run_knowledge

__all__ = [
    "KNOWLEDGE_REASON",
    "RULES",
    "Cluster",
    "KnowledgeConfig",
    "KnowledgeResult",
    "analyze_knowledge",
    "check_knowledge",
    "choose_unprunable",
    "clusters_of",
    "heatmap",
    "load_knowledge",
    "mark_unprunable",
    "probe",
    "reuse_knowledge",
    "run_knowledge",
]
