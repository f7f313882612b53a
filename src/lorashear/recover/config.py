"""The recovery configuration: one dataclass, paper-like defaults, loadable from a YAML recipe."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lorashear.data import PRETRAIN_CORPORA
from lorashear.errors import LorashearError

MIX_MODES = ("dynamic", "uniform")
PRECISIONS = ("auto", "no", "bf16", "fp16")


@dataclass
class RecoverConfig:
    """Everything a recovery run needs; `recipes/recover.yaml` holds the same defaults."""

    pruned: str = ""  # the pruned model (any `load_model` argument)
    out: str = ""  # the output folder (written to a temporary folder, renamed at the end)
    dense: str | None = None  # the dense model: reference losses for the dynamic mix, teacher for KD
    data: list[str] = field(default_factory=lambda: list(PRETRAIN_CORPORA))  # stage 1, one category each
    instruct: list[str] = field(default_factory=lambda: ["alpaca-demo"])  # stage 2, one category each
    tokens: int = 0  # training tokens in all (both stages, all processes)
    stage_split: float = 0.5  # share of the tokens spent in stage 1 (pretraining-like text)

    seq_len: int = 256
    batch_size: int = 4  # sequences per process per micro-batch
    grad_accum: int = 4
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: str | list[str] = "all-linear"

    # Dynamic mixture (Sheared-LLaMA / DoReMi style, see lorashear.recover.mixture).
    mix: str = "dynamic"
    mix_interval: int = 50  # optimiser steps between two updates of the sampling weights
    mix_eta: float = 1.0  # step size of the exponentiated update, per nat of excess loss
    mix_smoothing: float = 0.2  # c: weights are mixed with uniform, so each category keeps >= c/n
    held_out: float = 0.05  # share of each category's documents kept out of training to measure loss
    eval_sequences: int = 8  # held-out sequences per category per measurement

    kd_weight: float = 0.0  # loss = (1 - w) * CE + w * T^2 * KL(dense || pruned); 0 = off
    kd_temperature: float = 2.0

    checkpoint_every: int = 200  # optimiser steps; 0 = only at the end of the run
    keep_checkpoints: int = 2
    resume: bool = False
    stop_after_steps: int | None = None  # stop after this step, keeping the checkpoint (walltime-limited jobs)
    seed: int = 0
    mixed_precision: str = "auto"  # auto = bf16 on a GPU that supports it, else full precision

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> RecoverConfig:
        """Load a recipe; keyword overrides that are not None win (the CLI passes its flags here)."""
        path = Path(path)
        if not path.is_file():
            raise LorashearError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise LorashearError(f"{path} is not valid YAML: {err}") from err
        if not isinstance(raw, dict):
            raise LorashearError(f"{path}: expected a mapping of option names to values")
        return cls.from_dict({**raw, **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RecoverConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise LorashearError(f"unknown recovery option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def validate(self) -> None:
        """Raise LorashearError on values no run could use."""
        if not self.pruned:
            raise LorashearError("no pruned model given")
        if not self.out:
            raise LorashearError("no output folder given (-o OUT)")
        if self.tokens <= 0:
            raise LorashearError(f"--tokens must be a positive number of training tokens, got {self.tokens}")
        if not 0.0 <= self.stage_split <= 1.0:
            raise LorashearError(f"--stage-split is the share of tokens in stage 1, in [0, 1]; got {self.stage_split}")
        if self.stage_split > 0 and not self.data:
            raise LorashearError("stage 1 needs pretraining-like data (--data), or set --stage-split 0")
        if self.stage_split < 1 and not self.instruct:
            raise LorashearError("stage 2 needs instruction data (--instruct), or set --stage-split 1")
        for name in ("seq_len", "batch_size", "grad_accum", "lora_r", "mix_interval", "eval_sequences"):
            if getattr(self, name) <= 0:
                raise LorashearError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise LorashearError(f"--lr must be positive, got {self.lr}")
        if self.mix not in MIX_MODES:
            raise LorashearError(f"--mix must be one of {', '.join(MIX_MODES)}, got {self.mix!r}")
        if not 0.0 < self.mix_smoothing <= 1.0:
            raise LorashearError(f"mix_smoothing must be in (0, 1], got {self.mix_smoothing}")
        if not 0.0 < self.held_out < 1.0:
            raise LorashearError(f"held_out must be in (0, 1), got {self.held_out}")
        if not 0.0 <= self.kd_weight <= 1.0:
            raise LorashearError(f"--kd-weight must be in [0, 1], got {self.kd_weight}")
        if self.kd_temperature <= 0:
            raise LorashearError(f"kd_temperature must be positive, got {self.kd_temperature}")
        if self.checkpoint_every < 0:
            raise LorashearError(f"--checkpoint-every must be >= 0, got {self.checkpoint_every}")
        if self.mixed_precision not in PRECISIONS:
            raise LorashearError(f"mixed_precision must be one of {', '.join(PRECISIONS)}")
        if self.dense is None and (self.mix == "dynamic" or self.kd_weight > 0):
            raise LorashearError(
                "the dynamic mix and distillation need the dense model: pass --dense MODEL "
                "(or use --mix uniform --kd-weight 0)"
            )
