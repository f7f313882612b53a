"""The option dataclasses methods share: a one-shot method's `CriterionConfig`, a trained method's `TrainedConfig`.

A method's options are ONE dataclass (its `Method.config_cls`): LHSPG's `LhspgConfig` and LoRAPrune's
`LorapruneConfig` extend `TrainedConfig`, so one object holds a trained method's whole run. Every field is a
recipe key of `prune:` and a flag of `lorashear prune` (`lorashear.cli.options.add_option_args`): its
`metadata` gives the help text (`help`), and where it differs from the field's name and type, the flag
(`flag`), the values (`choices`), the parser (`type`) and the placeholder (`metavar`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from lorashear.data import PRETRAIN_CORPORA, refuse_evaluation_data
from lorashear.errors import LorashearError
from lorashear.importance import get_criterion
from lorashear.train.config import LoopConfig

SCORE_OPTION = "--score-option"  # the one flag of a criterion's options, whichever field holds them


def score_options_field(help_text: str) -> Any:
    """A field holding a criterion's options (KEY=VALUE pairs on the command line, `--score-option`)."""
    return field(default_factory=dict, metadata={"help": help_text, "flag": SCORE_OPTION, "metavar": "KEY=VALUE"})


@dataclass
class CriterionConfig:
    """A one-shot method's options: those of the criterion it ranks by (`CriterionConfig.of(criterion)`)."""

    criterion: ClassVar[str] = ""

    score_options: dict = score_options_field(
        "an option of the method's criterion (e.g. variant=vector for taylor, reduce=mean, normalize=l2; LHSPG: "
        "its saliency's, LoRAPrune: lora-grad's); repeatable")

    def __post_init__(self) -> None:
        get_criterion(self.criterion, **self.score_options)  # an unknown option fails now

    @classmethod
    def of(cls, criterion: str) -> type[CriterionConfig]:
        """The options class of a method that ranks by `criterion` (its options are checked against it)."""
        return type(f"CriterionConfig[{criterion}]", (cls,), {"criterion": criterion, "__doc__": cls.__doc__})


def _loop_field(name: str, default: Any) -> Any:
    """A `LoopConfig` field with a trained pruner's default (its help kept)."""
    return field(default=default, metadata=LoopConfig.__dataclass_fields__[name].metadata)


@dataclass
class TrainedConfig(LoopConfig):
    """A trained pruner's run: the shared loop options plus its data and token budget (`configs/methods/lhspg.yaml`).

    A trained method's options extend it; `training()` is the run alone (its `training.yaml`)."""

    kind: ClassVar[str] = "training"

    # Measured on the default model (README, LHSPG): 48 small steps at lr 1e-3 train BA far enough for the
    # periods to choose by it (20% LHSPG: wiki PPL 43.85), where 49 steps of 4x larger batches at 2e-4 did not (174.8).
    grad_accum: int = _loop_field("grad_accum", 1)
    lr: float = _loop_field("lr", 1e-3)
    data: list[str] = field(default_factory=lambda: list(PRETRAIN_CORPORA), metadata={  # one category each
        "help": "training corpora or files, mixed uniformly"})
    tokens: int = field(default=49_152, metadata={  # 48 steps of 4 x 256
        "help": "training tokens in all, every process together"})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.data = [self.data] if isinstance(self.data, str) else list(self.data)
        self.validate()

    def validate(self) -> None:
        if not self.data:
            raise LorashearError("no training data; name at least one corpus or file with --data")
        for spec in self.data:
            refuse_evaluation_data(spec)
        if isinstance(self.tokens, bool) or not isinstance(self.tokens, int) or self.tokens <= 0:
            raise LorashearError(f"--tokens must be a positive number of training tokens, got {self.tokens!r}")
        super().validate()

    def tokens_per_step(self, processes: int) -> int:
        return self.batch_size * self.seq_len * self.grad_accum * processes

    def training(self) -> TrainedConfig:
        """The training run alone (without the method's own options)."""
        return TrainedConfig(**{f.name: getattr(self, f.name) for f in fields(TrainedConfig)})

    def own_options(self) -> dict:
        """The method's own options (the fields beyond the training run's), as plain values."""
        shared = {f.name for f in fields(TrainedConfig)}
        return {k: v for k, v in self.to_dict().items() if k not in shared}


def option_names(config_cls: type | None) -> list[str]:
    """The options (recipe keys) of a method's config dataclass, in field order; none without one."""
    return [] if config_cls is None else [f.name for f in fields(config_cls) if f.init]
