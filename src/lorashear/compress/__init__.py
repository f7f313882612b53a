"""Compression: physically remove groups, export Hugging Face folders, load them back."""

from lorashear.compress.core import (
    add_output_bias,
    compress,
    compress_skeleton,
    count_params,
    removed_indices,
    zero_groups,
    zeroed,
)
from lorashear.compress.export import (
    PRUNING_FORMAT,
    FolderWeights,
    export,
    read_pruning_record,
)

__all__ = [
    "PRUNING_FORMAT",
    "FolderWeights",
    "add_output_bias",
    "compress",
    "compress_skeleton",
    "count_params",
    "export",
    "read_pruning_record",
    "removed_indices",
    "zero_groups",
    "zeroed",
]
