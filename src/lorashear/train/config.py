"""The options every trained stage shares (batch, optimiser, LoRA, checkpoints), loadable from a YAML recipe.

A stage's own config subclasses `LoopConfig`, so its YAML keys stay flat (`configs/methods/recover.yaml`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from lorashear.errors import LorashearError

PRECISIONS = ("auto", "no", "bf16", "fp16")
CHECKPOINTING = ("auto", "true", "false")  # gradient checkpointing; auto = on for models of >= 1B parameters
# Options that may change between a run and its resumption; any other change would train a different run
# (gradient checkpointing recomputes the same activations: memory, not results).
RESUMABLE_CHANGES = frozenset({"resume", "stop_after_steps", "checkpoint_every", "keep_checkpoints",
                               "gradient_checkpointing"})


def lora_targets(text: str) -> str | list[str]:
    """A command line's LoRA targets: `all-linear`, else module names, comma-separated."""
    return text if text == "all-linear" else [name.strip() for name in text.split(",") if name.strip()]


@dataclass
class LoopConfig:
    """Batch, optimiser, LoRA and checkpoint settings of one training run (LLM-Pruner-like LoRA defaults)."""

    kind: ClassVar[str] = "training"  # names the options in error messages ("unknown recovery option")

    # Each field's `help` is its command-line help (lorashear.cli.options makes flags from the fields).
    seq_len: int = field(default=256, metadata={"help": "tokens per sequence"})
    batch_size: int = field(default=4, metadata={"help": "sequences per process per micro-batch"})
    grad_accum: int = field(default=4, metadata={"help": "micro-batches per optimiser step"})
    lr: float = field(default=2e-4, metadata={"help": "LoRA learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW's weight decay"})
    warmup_ratio: float = field(default=0.03, metadata={
        "help": "share of the optimiser steps of linear learning-rate warm-up (then cosine decay)"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha: the update BA is scaled by alpha/r"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on LoRA's input"})
    lora_targets: str | list[str] = field(default="all-linear", metadata={
        "help": "layers that get LoRA: all-linear, or module names, comma-separated", "type": lora_targets,
        "metavar": "LIST"})

    checkpoint_every: int = field(default=200, metadata={  # 0 = only at the end of the run
        "help": "optimiser steps between checkpoints"})
    keep_checkpoints: int = field(default=2, metadata={"help": "checkpoints kept (the oldest are deleted)"})
    resume: bool = field(default=False, metadata={
        "help": "continue the unfinished run of -o OUT from its last checkpoint (.OUT.partial)"})
    stop_after_steps: int | None = field(default=None, metadata={  # walltime-limited jobs
        "help": "stop after this step, keeping a checkpoint for --resume", "metavar": "N"})
    seed: int = field(default=0, metadata={"help": "seed of the data order, LoRA initialisation and dropout"})
    mixed_precision: str = field(default="auto", metadata={
        "help": "auto (bf16 on a GPU that supports it, else full precision), no, bf16 or fp16"})
    # recompute each decoder layer's activations in the backward pass instead of keeping them (HF's)
    gradient_checkpointing: str = field(default="auto", metadata={
        "help": "recompute activations in the backward pass: auto (on from 1B parameters), true, false"})

    def __post_init__(self) -> None:
        if isinstance(self.gradient_checkpointing, bool):  # YAML's true/false
            self.gradient_checkpointing = str(self.gradient_checkpointing).lower()

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any):
        """Load a recipe; keyword overrides that are not None win (the CLI passes its flags here)."""
        raw = read_recipe(path)
        return cls.from_dict({**raw, **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise LorashearError(f"unknown {cls.kind} option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def validate(self) -> None:
        """Raise LorashearError on loop settings no run could use."""
        for name in ("seq_len", "batch_size", "grad_accum", "lora_r"):
            if getattr(self, name) <= 0:
                raise LorashearError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise LorashearError(f"--lr must be positive, got {self.lr}")
        if self.checkpoint_every < 0:
            raise LorashearError(f"--checkpoint-every must be >= 0, got {self.checkpoint_every}")
        if self.mixed_precision not in PRECISIONS:
            raise LorashearError(f"mixed_precision must be one of {', '.join(PRECISIONS)}")
        if self.gradient_checkpointing not in CHECKPOINTING:
            raise LorashearError(f"--gradient-checkpointing must be one of {', '.join(CHECKPOINTING)}, "
                                 f"got {self.gradient_checkpointing!r}")

    def check_same_run(self, saved: Path) -> None:
        """On --resume: refuse options that differ from the interrupted run's (saved at `saved`)."""
        before = type(self).from_yaml(saved).to_dict()
        changed = sorted(k for k, v in self.to_dict().items() if k not in RESUMABLE_CHANGES and before.get(k) != v)
        if changed:
            diffs = ", ".join(f"{k}: {before.get(k)!r} -> {getattr(self, k)!r}" for k in changed)
            raise LorashearError(f"--resume with different options than the interrupted run ({diffs}); use the same ones")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's floats: `2e-4` and `1E3` are numbers, not strings (YAML 1.1 wants `2.0e-4`)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """YAML text as Python values (safe; numbers as a user writes them, `lr: 2e-4` included)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def read_recipe(path: str | Path) -> dict[str, Any]:
    """A YAML recipe's mapping of option names to values (clear errors for a missing or malformed file)."""
    path = Path(path)
    if not path.is_file():
        raise LorashearError(f"config file not found: {path}")
    try:
        raw = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise LorashearError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise LorashearError(f"{path}: expected a mapping of option names to values")
    return raw
