"""Stage 5: physically remove groups, export Hugging Face folders, load them back."""

from lorashear.compress.core import (
    add_output_bias,
    compress,
    count_params,
    removed_indices,
    zero_groups,
    zeroed,
)
from lorashear.compress.export import export, is_pruned_folder, load_pruned, pruned_skeleton

__all__ = [
    "add_output_bias",
    "compress",
    "count_params",
    "export",
    "is_pruned_folder",
    "load_pruned",
    "pruned_skeleton",
    "removed_indices",
    "zero_groups",
    "zeroed",
]
