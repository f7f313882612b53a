"""The recovery configuration: the shared loop options plus recovery's own, paper-like defaults, loadable from YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from lorashear.data import PRETRAIN_CORPORA
from lorashear.errors import LorashearError
from lorashear.models import resolve_dtype
from lorashear.train.config import LoopConfig

MIX_MODES = ("dynamic", "uniform")


@dataclass
class RecoverConfig(LoopConfig):
    """Everything a recovery run needs; `configs/methods/recover.yaml` holds the same defaults (loop options: LoopConfig)."""

    kind: ClassVar[str] = "recovery"

    pruned: str = ""  # the pruned model (any `load_model` argument)
    out: str = ""  # the output folder (written to a temporary folder, renamed at the end)
    dense: str | None = None  # the dense model: reference losses for the dynamic mix, teacher for KD
    dtype: str = "auto"  # both models' weights (lorashear.models.DTYPES); LoRA factors train in float32
    data: list[str] = field(default_factory=lambda: list(PRETRAIN_CORPORA))  # stage 1, one category each
    instruct: list[str] = field(default_factory=lambda: ["alpaca-demo"])  # stage 2, one category each
    tokens: int = 0  # training tokens in all (both stages, all processes)
    stage_split: float = 0.5  # share of the tokens spent in stage 1 (pretraining-like text)

    # Dynamic mixture (Sheared-LLaMA / DoReMi style, see lorashear.recover.mixture).
    mix: str = "dynamic"
    mix_interval: int = 50  # optimiser steps between two updates of the sampling weights
    mix_eta: float = 1.0  # step size of the exponentiated update, per nat of excess loss
    mix_smoothing: float = 0.2  # c: weights are mixed with uniform, so each category keeps >= c/n
    held_out: float = 0.05  # share of each category's documents kept out of training to measure loss
    eval_sequences: int = 8  # held-out sequences per category per measurement

    kd_weight: float = 0.0  # loss = (1 - w) * CE + w * T^2 * KL(dense || pruned); 0 = off
    kd_temperature: float = 2.0

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
        super().validate()
        resolve_dtype(self.dtype)  # an unknown name, or a dtype this device cannot run, fails before any work
        for name in ("mix_interval", "eval_sequences"):
            if getattr(self, name) <= 0:
                raise LorashearError(f"{name} must be positive, got {getattr(self, name)}")
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
        if self.dense is None and (self.mix == "dynamic" or self.kd_weight > 0):
            raise LorashearError(
                "the dynamic mix and distillation need the dense model: pass --dense MODEL "
                "(or use --mix uniform --kd-weight 0)"
            )
