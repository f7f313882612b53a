"""Recovery's run folder and checkpoints are the shared loop's: see `lorashear.train.checkpoint`."""

from lorashear.train.checkpoint import (
    CHECKPOINTS,
    check_run_dir,
    checkpoint_dir,
    checkpoint_step,
    copy_model_extras,
    finish,
    latest_checkpoint,
    list_checkpoints,
    mark_complete,
    partial_dir,
    prune_checkpoints,
    start_run_dir,
)

__all__ = [
    "CHECKPOINTS",
    "check_run_dir",
    "checkpoint_dir",
    "checkpoint_step",
    "copy_model_extras",
    "finish",
    "latest_checkpoint",
    "list_checkpoints",
    "mark_complete",
    "partial_dir",
    "prune_checkpoints",
    "start_run_dir",
]
