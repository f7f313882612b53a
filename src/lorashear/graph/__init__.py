"""The dependency graph of minimally removable structures."""

from lorashear.graph.build import build_graph
from lorashear.graph.structures import (
    ATTENTION_BLOCK,
    DEFAULT_KINDS,
    GROUP_KINDS,
    HIDDEN_CHANNEL,
    KV_GROUP,
    MLP_BLOCK,
    MLP_CHANNEL,
    QUERY_HEAD,
    Group,
    Slice,
    StructureGraph,
    groups_from_json,
    groups_to_json,
)

__all__ = [
    "ATTENTION_BLOCK",
    "DEFAULT_KINDS",
    "GROUP_KINDS",
    "HIDDEN_CHANNEL",
    "KV_GROUP",
    "MLP_BLOCK",
    "MLP_CHANNEL",
    "QUERY_HEAD",
    "Group",
    "Slice",
    "StructureGraph",
    "build_graph",
    "groups_from_json",
    "groups_to_json",
]
