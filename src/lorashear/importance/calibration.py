"""Calibration data and passes: token batches from training corpora, input statistics of linear layers.

Calibration text comes only from training corpora (`lorashear.data` refuses evaluation sets).
Each corpus is packed into `seq_len`-token sequences and the samples are drawn round-robin
across corpora; sequences held out for the knowledge analysis are disjoint from them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from lorashear.data import PRETRAIN_CORPORA, load_documents, pack, refuse_evaluation_data
from lorashear.errors import LorashearError
from lorashear.models import input_device


@dataclass(frozen=True)
class CalibrationConfig:
    """Which text, how many sequences and how long (defaults: the packaged pretraining-like corpora)."""

    data: tuple[str, ...] = PRETRAIN_CORPORA
    samples: int = 64
    seq_len: int = 256
    held_out: int = 8  # sequences kept apart for the knowledge analysis's loss
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", tuple(self.data))
        if not self.data:
            raise LorashearError("no calibration data; name at least one corpus with --data")
        for spec in self.data:
            refuse_evaluation_data(spec)
        for name, value, low in (("--calib-samples", self.samples, 1), ("--seq-len", self.seq_len, 8),
                                 ("held-out samples", self.held_out, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise LorashearError(f"{name} must be an integer ≥ {low}, got {value!r}")


@dataclass
class CalibrationData:
    """Token ids for scoring ([samples, seq_len]) and a disjoint held-out set ([held_out, seq_len])."""

    batches: torch.Tensor
    held_out: torch.Tensor
    config: CalibrationConfig

    @property
    def tokens(self) -> int:
        return self.batches.numel()

    def summary(self) -> str:
        """One log line: what was drawn, from which corpora."""
        return (f"calibration: {len(self.batches)} × {self.config.seq_len} tokens from {', '.join(self.config.data)} "
                f"(+{len(self.held_out)} held out)")


def load_calibration(tokenizer, config: CalibrationConfig) -> CalibrationData:
    """Pack every corpus, draw `samples` + `held_out` sequences round-robin, refuse too little text."""
    packed = [pack(load_documents(spec), tokenizer, config.seq_len, seed=config.seed) for spec in config.data]
    needed = config.samples + config.held_out
    order = _round_robin([len(p) for p in packed], needed)
    if len(order) < needed:
        raise LorashearError(
            f"calibration needs {needed} sequences of {config.seq_len} tokens ({config.samples} + {config.held_out} "
            f"held out) but {', '.join(config.data)} give only {len(order)}; lower --calib-samples or --seq-len, "
            "or add data with --data"
        )
    rows = torch.stack([packed[c][k] for c, k in order])
    return CalibrationData(rows[: config.samples], rows[config.samples :], config)


def _round_robin(sizes: Sequence[int], needed: int) -> list[tuple[int, int]]:
    """(corpus, row) pairs taking one row from each corpus in turn until `needed` or all are used."""
    order: list[tuple[int, int]] = []
    row = 0
    while len(order) < needed and any(row < n for n in sizes):
        order += [(c, row) for c, n in enumerate(sizes) if row < n]
        row += 1
    return order[:needed]


def iterate_batches(batches: torch.Tensor, batch_size: int, desc: str | None = None) -> Iterator[torch.Tensor]:
    """Mini-batches of `batches`, with a progress bar when `desc` is given."""
    starts = range(0, len(batches), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=desc is None, leave=False):
        yield batches[start : start + batch_size]


@torch.no_grad()
def mean_loss(
    model: nn.Module, batches: torch.Tensor, batch_size: int = 4, on_batch: Callable[[int], None] | None = None
) -> float:
    """Mean next-token NLL of the model over every predicted token of `batches` (`on_batch(i)` before batch i)."""
    device = input_device(model)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()  # no dropout: the same text must give the same loss
    try:
        for index, batch in enumerate(iterate_batches(batches, batch_size)):
            if on_batch is not None:
                on_batch(index)
            batch = batch.to(device)
            logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(  # the logits' device: the last layer's, when spread over devices
                logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1).to(logits.device), reduction="sum"
            )
            total += float(nll)
            count += batch[:, 1:].numel()
    finally:
        model.train(was_training)
    return total / count


@dataclass
class InputStats:
    """Running statistics of a linear layer's input channels over calibration tokens (float64)."""

    count: int
    sum: torch.Tensor
    sum_sq: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / self.count

    @property
    def variance(self) -> torch.Tensor:
        """Population variance per channel (FLAP's fluctuation uses it)."""
        return (self.sum_sq / self.count - self.mean**2).clamp_min(0.0)

    @property
    def norm(self) -> torch.Tensor:
        """‖X_j‖₂ over all tokens per channel (Wanda)."""
        return self.sum_sq.sqrt()


def linear_layers(model: nn.Module) -> dict[str, nn.Module]:
    """state_dict weight name -> the module that multiplies its input by it (a LoRA layer's base layer)."""
    out = {}
    for name, module in model.named_modules():
        if ".lora_" in name or name.rpartition(".")[2].startswith("lora_"):
            continue
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            out[f"{name}.weight"] = module
    return out


def input_dim(layer: nn.Module) -> int:
    """The weight dim that indexes input channels: 1 for nn.Linear ([out, in]), 0 for transformers' Conv1D."""
    return 0 if type(layer).__name__ == "Conv1D" else 1


@torch.no_grad()
def collect_input_stats(
    model: nn.Module, batches: torch.Tensor, weight_names: Sequence[str], batch_size: int = 4,
    desc: str = "calibration pass",
) -> dict[str, InputStats]:
    """Input statistics of the linear layers owning `weight_names`, from one pass over `batches`."""
    layers = linear_layers(model)
    missing = [n for n in weight_names if n not in layers]
    if missing:
        raise LorashearError(f"not linear layers of this model: {missing[:3]}")
    stats: dict[str, InputStats] = {}

    def hook(name: str):
        def record(_module, inputs, _output) -> None:
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double()
            st = stats.get(name)
            if st is None:
                stats[name] = InputStats(x.shape[0], x.sum(0), (x * x).sum(0))
            else:
                st.count += x.shape[0]
                st.sum += x.sum(0)
                st.sum_sq += (x * x).sum(0)

        return record

    handles = [layers[n].register_forward_hook(hook(n)) for n in dict.fromkeys(weight_names)]
    device = input_device(model)
    try:
        for batch in iterate_batches(batches, batch_size, desc):
            model(input_ids=batch.to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return stats
