"""The importance stage's pieces: a criterion turns (model, graph, data) into one score per group.

Most criteria score *elements*: they yield, per parameter, a tensor of the parameter's shape
(|W|², w·∂L/∂w, |W|·‖X‖ …). `aggregate` then sums each group's elements over all of its
slices (heads, KV groups, MLP channels, hidden channels alike) and reduces the sum to one
number. A criterion that needs something else (FLAP's standardised fluctuation) overrides
`score`. Higher score = more important = pruned later.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn

from lorashear.distributed import all_reduce_sum, full_tensor, is_dtensor, local_rows
from lorashear.errors import LorashearError
from lorashear.graph.build import refuse_dora
from lorashear.graph.counting import group_sizes
from lorashear.graph.structures import StructureGraph

# How a group's summed elements become its score.
REDUCTIONS = ("sum", "mean", "abs-sum", "l2", "square")
NORMALIZATIONS = ("none", "l2")


@dataclass
class ScoreContext:
    """What a criterion may read: the model (peft LoRA attached or not), its graph, calibration data."""

    model: nn.Module
    graph: StructureGraph
    batches: torch.Tensor | None = None  # [n, seq_len] calibration token ids
    batch_size: int = 4
    aliases: dict[str, str] = field(default_factory=dict)  # tied state_dict names -> the name they share
    kinds: tuple[str, ...] | None = None  # score only groups of these kinds (None: all)
    # base weight name -> s·BA, kept for the context's life when a dict (a mix of proxies reads each many times);
    # None computes it at each use (one weight-sized tensor per LoRA layer is a model copy's worth of memory)
    deltas: dict[str, torch.Tensor | None] | None = None
    memo: dict = field(default_factory=dict, repr=False, compare=False)  # what depends on graph and kinds only
    # ∂L/∂w of the scored weights when the caller already has them (LHSPG's training steps): a criterion that
    # reads gradients (`reads_gradients`) takes these instead of computing its own on `batches`
    gradients: dict[str, torch.Tensor] | None = None

    def require_batches(self, criterion: str) -> torch.Tensor:
        if self.batches is None or len(self.batches) == 0:
            raise LorashearError(f"criterion '{criterion}' needs calibration data; pass --data/--calib-samples")
        return self.batches

    def wanted(self) -> list[int]:
        """Indices (in graph.groups) of the groups to score."""
        return [i for i, g in enumerate(self.graph.groups) if self.kinds is None or g.kind in self.kinds]

    def lora_delta(self, name: str, layer: nn.Module) -> torch.Tensor | None:
        """`lora_delta(layer)` of the base weight `name`, from `deltas` when it is kept."""
        if self.deltas is None:
            return lora_delta(layer)
        if name not in self.deltas:
            self.deltas[name] = lora_delta(layer)
        return self.deltas[name]

    def slice_table(self) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
        """(parameter, dim) -> (indices along dim, position in `wanted()` of the group of each) over every wanted
        group's slices, LoRA factors and tied aliases left out: `aggregate` sums channels into groups with it."""
        if "slice_table" not in self.memo:
            parts: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
            for k, i in enumerate(self.wanted()):
                for s in self.graph.groups[i].slices:
                    if ".lora_" not in s.param and s.param not in self.aliases:
                        index, owner = parts.setdefault((s.param, s.dim), ([], []))
                        index.extend(s.index)
                        owner.extend([k] * len(s.index))
            self.memo["slice_table"] = {key: (np.asarray(ix, dtype=np.int64), np.asarray(ow, dtype=np.int64))
                                        for key, (ix, ow) in parts.items()}
        return self.memo["slice_table"]

    def scored_params(self) -> set[str]:
        """state_dict names of the base weights that some wanted group slices (LoRA factors excluded)."""
        return {s.param for i in self.wanted() for s in self.graph.groups[i].slices if ".lora_" not in s.param}

    def scored_parameters(self) -> dict[str, nn.Parameter]:
        """`scored_params()` as the model's own parameters (by name, sorted; a tied weight once)."""
        return parameters_named(self.model, self.scored_params())


@dataclass
class GroupScores:
    """One score per group (index in graph.groups -> score; higher = keep) and how it was made."""

    criterion: str
    scores: dict[int, float]
    settings: dict = field(default_factory=dict)

    def ranked(self, indices: Iterable[int]) -> list[int]:
        """`indices` from least to most important."""
        return sorted(indices, key=lambda i: self.scores[i])


@dataclass
class Criterion:
    """Base of every criterion: options are the dataclass fields (defaults as in the papers)."""

    name: ClassVar[str] = ""
    needs_data: ClassVar[bool] = False
    reads_gradients: ClassVar[bool] = False  # scores from ∂L/∂w of the full weights (ScoreContext.gradients)
    reduce: str = "sum"
    normalize: str = "none"  # "l2": each parameter's element scores divided by their L2 norm (LoRAPrune)

    def __post_init__(self) -> None:
        if self.reduce not in REDUCTIONS:
            raise LorashearError(f"{self.name}: reduce must be one of {', '.join(REDUCTIONS)}, got {self.reduce!r}")
        if self.normalize not in NORMALIZATIONS:
            raise LorashearError(
                f"{self.name}: normalize must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}"
            )

    def settings(self) -> dict:
        return {"criterion": self.name, **asdict(self)}

    def per_channel_abs(self) -> bool:
        """Whether each parameter row/column sum is made absolute before the group sum (LLM-Pruner's vector)."""
        return False

    def elements(self, ctx: ScoreContext) -> Iterator[tuple[str, torch.Tensor]]:
        """(state_dict name, element scores of that parameter's shape), one parameter at a time."""
        raise NotImplementedError

    def score(self, ctx: ScoreContext) -> GroupScores:
        """One score per wanted group of `ctx.graph`."""
        sums, counts = aggregate(ctx, self.elements(ctx), self.normalize, self.per_channel_abs())
        return GroupScores(self.name, reduce_scores(sums, counts, self.reduce), self.settings())


# ---------------------------------------------------------------- registry

CRITERIA: dict[str, type[Criterion]] = {}


def register(cls: type[Criterion]) -> type[Criterion]:
    """Class decorator: make a criterion available by its `name`."""
    CRITERIA[cls.name] = cls
    return cls


def get_criterion(name: str, **options: Any) -> Criterion:
    """An instance of the registered criterion `name` with `options` (field names of its dataclass)."""
    if name not in CRITERIA:
        raise LorashearError(f"unknown criterion '{name}'; choose from {', '.join(sorted(CRITERIA))}")
    cls = CRITERIA[name]
    known = {f.name: f for f in fields(cls) if f.init}  # derived fields (lhspg's parsed mix) are no options
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise LorashearError(
            f"criterion '{name}' has no option {', '.join(unknown)}; its options are {', '.join(known)}"
        )
    return cls(**{k: _coerce(v, known[k].default) for k, v in options.items()})


def _coerce(value: Any, default: Any) -> Any:
    """Options from the command line arrive as strings: convert them to the default's type."""
    if not isinstance(value, str) or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            return value.lower() in ("1", "true", "yes")
        return type(default)(value)
    except (TypeError, ValueError) as err:
        raise LorashearError(f"option value {value!r} is not a {type(default).__name__}") from err


# ---------------------------------------------------------------- aggregation


def _channel_sums(elements: torch.Tensor, dim: int) -> np.ndarray:
    """Sum of `elements` over every dim but `dim`: one value per index along `dim` (float64)."""
    other = [d for d in range(elements.dim()) if d != dim]
    sums = elements.detach().sum(dim=other, dtype=torch.float64) if other else elements.detach().double()
    return sums.cpu().numpy()


@dataclass
class ChannelSums:
    """One parameter's element scores reduced to what `aggregate` needs: per wanted dim, one sum per index along
    it (float64; made absolute per channel when asked), and the element count of each such channel."""

    sums: dict[int, np.ndarray]
    per_channel: dict[int, int]


class LocalRows(NamedTuple):
    """Element scores of rows [start, start + len(values)) of a parameter of `shape`: what a criterion yields for a
    parameter sharded across processes (FSDP, `train.sharding`); every process yields its rows of it in turn."""

    values: torch.Tensor
    start: int
    shape: torch.Size


def channel_sums(elements: torch.Tensor | LocalRows, dims: Iterable[int], normalize: str = "none",
                 channel_abs: bool = False) -> ChannelSums:
    """`elements` of one parameter (divided by their L2 norm first with `normalize="l2"`) summed over every dim but
    each of `dims`: the small record a criterion may keep instead of the parameter-sized tensor. `LocalRows`: each
    process's rows, the sums added across the processes (every process must call it for the same parameters)."""
    if isinstance(elements, LocalRows):
        values, start = elements.values, elements.start
        return channel_sums_by_rows(lambda rows: values[rows], elements.shape, dims, normalize, channel_abs,
                                    local=(start, values.shape[0]))
    return channel_sums_by_rows(lambda rows: elements[rows], elements.shape, dims, normalize, channel_abs)


# Elements of one parameter that `channel_sums_by_rows` turns into float32/float64 temporaries at once (≈ 100 MB):
# a whole 8B embedding would be 525M elements, 2-8 GB of them.
ROW_BLOCK_ELEMENTS = 1 << 22


def channel_sums_by_rows(rows_of: Callable[[slice], torch.Tensor], shape: torch.Size, dims: Iterable[int],
                         normalize: str = "none", channel_abs: bool = False,
                         local: tuple[int, int] | None = None) -> ChannelSums:
    """`channel_sums` of a parameter's elements (of `shape`) made a block of rows at a time by `rows_of(rows)`, at
    most `ROW_BLOCK_ELEMENTS` elements each: the same sums without a parameter-sized temporary. `local` (first
    row, rows): `rows_of` reads this process's rows only; the sums are added across the processes."""
    dims = list(dims)
    per_row = math.prod(shape[1:])
    step = max(1, ROW_BLOCK_ELEMENTS // max(per_row, 1))
    first, count = local if local is not None else (0, shape[0])
    rows: list[np.ndarray] = []  # dim 0: one block of channels per block of rows
    across = {d: np.zeros(shape[d]) for d in dims if d != 0}  # other dims: every block adds to each channel
    square = 0.0
    for start in range(0, count, step):
        block = rows_of(slice(start, start + step))
        if normalize == "l2":
            square += float(block.double().square().sum())
        if 0 in dims:
            rows.append(_channel_sums(block, 0))
        for d in across:
            across[d] = across[d] + _channel_sums(block, d)
    sums = {d: across[d] for d in across}
    if 0 in dims:
        sums[0] = np.zeros(shape[0])
        sums[0][first:first + count] = np.concatenate(rows) if rows else 0.0
    if local is not None:  # every process's part: one sum of the square and all the channels
        square, sums = _sum_over_processes(square, sums)
    norm = math.sqrt(square)
    if normalize == "l2" and norm > 0:
        sums = {d: v / norm for d, v in sums.items()}
    return ChannelSums({d: np.abs(v) if channel_abs else v for d, v in sums.items()},
                       {d: math.prod(shape) // shape[d] for d in dims})


def _sum_over_processes(square: float, sums: dict[int, np.ndarray]) -> tuple[float, dict[int, np.ndarray]]:
    keys = sorted(sums)
    flat = torch.from_numpy(np.concatenate([[square], *(sums[d] for d in keys)]))
    all_reduce_sum(flat)
    out, at = {}, 1
    for d in keys:
        out[d] = flat[at:at + len(sums[d])].numpy()
        at += len(sums[d])
    return float(flat[0]), out


def needed_dims(ctx: ScoreContext) -> dict[str, list[int]]:
    """state_dict name -> the dims along which some wanted group slices it (`ctx.slice_table()`)."""
    needed: dict[str, list[int]] = {}
    for name, d in ctx.slice_table():
        needed.setdefault(name, []).append(d)
    return needed


def aggregate(
    ctx: ScoreContext, elements: Iterable[tuple[str, torch.Tensor]], normalize: str = "none",
    channel_abs: bool = False,
) -> tuple[dict[int, float], dict[int, int]]:
    """Per wanted group: the sum of its element scores over all its slices, and how many elements that is.
    With `channel_abs`, each parameter row/column sum is made absolute before the group sum.

    LoRA factors and tied aliases are skipped (they merge into / are the same as the base weights).
    """
    needed = needed_dims(ctx)
    reduced = ((name, channel_sums(elem, needed[name], normalize, channel_abs))
               for name, elem in elements if name in needed)
    return aggregate_channels(ctx, reduced)


def aggregate_channels(ctx: ScoreContext, reduced: Iterable[tuple[str, ChannelSums]]
                       ) -> tuple[dict[int, float], dict[int, int]]:
    """`aggregate` from parameters' `ChannelSums` (each parameter's element tensor already reduced)."""
    wanted = ctx.wanted()
    table = ctx.slice_table()
    sums = np.zeros(len(wanted))
    counts = np.zeros(len(wanted), dtype=np.int64)
    for name, record in reduced:
        for d, channel in record.sums.items():
            index, owner = table[(name, d)]
            sums += np.bincount(owner, weights=channel[index], minlength=len(wanted))
            counts += np.bincount(owner, minlength=len(wanted)) * record.per_channel[d]
    return ({i: float(v) for i, v in zip(wanted, sums.tolist(), strict=True)},
            {i: int(c) for i, c in zip(wanted, counts.tolist(), strict=True)})


def reduce_scores(sums: dict[int, float], counts: dict[int, int], reduce: str) -> dict[int, float]:
    """Group sums to scores: as they are, per element (`mean`), absolute (`abs-sum`), square root (`l2`),
    or half the square (`square`: the second-order Taylor form ½(Σ)²)."""
    if reduce == "sum":
        return dict(sums)
    if reduce == "abs-sum":
        return {i: abs(v) for i, v in sums.items()}
    if reduce == "l2":
        return {i: math.sqrt(max(v, 0.0)) for i, v in sums.items()}
    if reduce == "square":
        return {i: 0.5 * v * v for i, v in sums.items()}
    return {i: (v / counts[i] if counts[i] else 0.0) for i, v in sums.items()}


# ---------------------------------------------------------------- weights as the model computes them


def parameters_named(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Parameter]:
    """The parameters of `model` called `names` (state_dict names; a tied alias, absent from
    named_parameters, is left out), sorted by name."""
    params = dict(model.named_parameters())
    return {n: params[n] for n in sorted(names) if n in params}


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """state_dict name of each LoRA layer's base weight -> the peft LoRA layer."""
    out = {}
    for name, module in model.named_modules():
        if hasattr(module, "base_layer") and hasattr(module, "lora_A") and hasattr(module, "get_delta_weight"):
            out[f"{name}.base_layer.weight"] = module
    return out


def effective_weights(model: nn.Module, names: Iterable[str] | None = None,
                      ctx: ScoreContext | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(state_dict name, W + s·B·A) for every weight of the model (W alone where no LoRA is attached);
    s·BA from `ctx` when given (it may keep them)."""
    refuse_dora(model)  # its weight is not W + s·BA
    lora = lora_layers(model)
    state = model.state_dict()
    for name in names if names is not None else state:
        if ".lora_" in name or name not in state:
            continue
        w = state[name]
        if name not in lora:
            delta = None
        else:
            delta = ctx.lora_delta(name, lora[name]) if ctx is not None else lora_delta(lora[name])
        yield name, (w if delta is None else w + delta.to(w.dtype))


def lora_delta(layer: nn.Module) -> torch.Tensor | None:
    """s·B·A of a peft LoRA layer's active, unmerged adapters, in its base weight's layout (None: no such adapter)."""
    merged = set(getattr(layer, "merged_adapters", []))  # already inside W
    delta = None
    with torch.no_grad():
        for adapter in layer.active_adapters:
            if adapter in layer.lora_A and adapter not in merged:
                d = layer.get_delta_weight(adapter)
                delta = d if delta is None else delta + d
    return delta


def lora_delta_rows(layer: nn.Module) -> torch.Tensor | None:
    """`lora_delta` on this process's rows of a sharded (FSDP) layer: s·B[rows]·A, float32, with A (r × in) gathered
    whole (every process must call it); an unsharded layer's `lora_delta`."""
    if not is_dtensor(layer.base_layer.weight):
        return lora_delta(layer)
    if getattr(layer, "fan_in_fan_out", False):
        raise LorashearError("sharded weights: LoRA on Linear layers only (not fan-in-fan-out Conv1D)")
    merged = set(getattr(layer, "merged_adapters", []))
    delta = None
    with torch.no_grad():
        for adapter in layer.active_adapters:
            if adapter in layer.lora_A and adapter not in merged:
                a = full_tensor(layer.lora_A[adapter].weight.detach()).float()
                d = layer.scaling[adapter] * (local_rows(layer.lora_B[adapter].weight)[0].float() @ a)
                delta = d if delta is None else delta + d
    return delta


# How a reduction grows with a group's size: scores are divided by size**power to compare per parameter.
SIZE_POWERS = {"sum": 1.0, "abs-sum": 1.0, "l2": 0.5, "square": 2.0}


def per_parameter_scores(graph: StructureGraph, scores: GroupScores, aliases: dict[str, str] | None = None,
                         sizes: dict[int, int] | None = None) -> dict[int, float]:
    """`scores` as importance per parameter held, so groups of different sizes (heads, channels)
    compare: sums divided by the group's size, L2 norms by its square root (an RMS); means stay as they are.
    `sizes`: `group_sizes` of the scored groups, when the caller has them already."""
    power = SIZE_POWERS.get(scores.settings.get("reduce"))
    if power is None:
        return dict(scores.scores)
    sizes = sizes if sizes is not None else group_sizes(graph, scores.scores, aliases)
    return {i: s / max(sizes[i], 1) ** power for i, s in scores.scores.items()}
