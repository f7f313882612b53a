"""Inference speed, memory and compute of a causal LM.

- prefill: one forward of a `prefill_tokens`-token input (batch 1) building the KV cache;
- decode: greedy `generate` (batch 1, KV cache) of exactly `decode_tokens` new tokens
  (min_new_tokens = max_new_tokens) after a `decode_prompt_tokens` prompt; the rate is timed from
  the first generated token to the last, so the prompt's prefill is excluded;
- rounds: after `warmup` untimed rounds, each timed round runs every model's prefill, then every
  model's decode, back to back (A B A B …); a model's tok/s is the median over rounds. Inputs are
  fixed random ids (speed does not depend on the text);
- `compare(models)` is how models are compared: they alternate within one measurement window, so a
  round's ratio (model / first model) sees the same machine load on both sides; the ratio is
  reported as median and min–max over rounds. `measure_speed(model)` is one model's absolute speed;
- every figure carries the machine it was taken on (device, cores, torch threads, the 1-minute
  load average sampled every round) and warnings when the machine was busy (load above the core
  count) or the rounds disagree by more than `max_spread` ((max − min) / median);
- memory: on CUDA the peak allocated bytes (torch.cuda.max_memory_allocated) during the runs;
  on CPU the peak resident-set increase of the process during the runs (Linux VmHWM, reset
  through /proc/self/clear_refs before them), weights excluded since they are already resident;
- MACs per token: `linear_macs_per_token` is Σ in×out over Linear layers (the LM head included;
  embedding lookups cost none); `macs_per_token` adds attention for a token that attends to
  `context` positions: 2 × (query heads × head_dim) × context per layer (scores Q·Kᵀ and the
  weighted sum of V). The tests check this formula against torch's FlopCounterMode.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers.generation.streamers import BaseStreamer

from lorashear.errors import LorashearError
from lorashear.models import count_parameters, release_memory

DEFAULT_PREFILL_TOKENS = 512
DEFAULT_DECODE_TOKENS = 128
DEFAULT_DECODE_PROMPT_TOKENS = 32
DEFAULT_REPEATS = 3
DEFAULT_ROUNDS = 5
DEFAULT_WARMUP = 1
DEFAULT_MACS_CONTEXT = 512
DEFAULT_MAX_SPREAD = 0.15  # rounds disagreeing by more than this ((max − min) / median) are flagged
METRICS = ("prefill", "decode")

Clock = Callable[[], float]


@dataclass(frozen=True)
class Machine:
    """Where and under what load figures were taken."""

    device: str
    device_name: str  # the CUDA device's name, else the CPU's model name
    cpu_count: int
    torch_threads: int
    load: tuple[float, ...]  # 1-minute load average before the warm-up and after every round

    @classmethod
    def from_dict(cls, d: dict) -> Machine:
        return cls(**{**d, "load": tuple(d["load"])})

    @property
    def busy(self) -> bool:
        """More runnable processes than cores at some point of the measurement."""
        return bool(self.load) and max(self.load) > self.cpu_count

    def describe(self) -> str:
        load = f"load average {min(self.load):.1f}–{max(self.load):.1f}" if self.load else "load average unknown"
        threads = f"{self.torch_threads} torch thread{'s' if self.torch_threads != 1 else ''}"
        return f"{self.device} ({self.device_name}), {self.cpu_count} cores, {threads}, {load} (1 min, sampled every round)"


@dataclass(frozen=True)
class Spread:
    """Median and range of one figure over the measurement rounds."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    @property
    def relative(self) -> float:
        """(max − min) / median: how much the rounds disagree."""
        return (self.max - self.min) / self.median


@dataclass(frozen=True)
class SpeedResult:
    """Measured speed and size of a model on one device."""

    device: str
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    peak_memory_bytes: int
    memory_measure: str  # "cuda_max_allocated" | "cpu_peak_rss_increase" | "cpu_peak_rss"
    params: int
    linear_macs_per_token: int
    macs_per_token: int
    macs_context: int
    prefill_tokens: int
    decode_tokens: int
    decode_prompt_tokens: int
    repeats: int
    machine: Machine | None = None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SpeedResult:
        """The result a `to_dict` object describes."""
        machine = d.get("machine")
        return cls(**{**d, "machine": Machine.from_dict(machine) if machine else None,
                      "warnings": tuple(d.get("warnings", ()))})


class _TokenClock(BaseStreamer):
    """Records when `generate` emits each new token (its first `put` is the prompt)."""

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self.clock = clock
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.times.append(self.clock())

    def end(self) -> None:
        pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _random_ids(model, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    vocab = model.get_input_embeddings().num_embeddings
    return torch.randint(0, vocab, (1, length), generator=generator)


@torch.no_grad()
def time_prefill(model, input_ids: torch.Tensor, clock: Clock = time.perf_counter) -> float:
    """Seconds for one forward over `input_ids` that builds the KV cache."""
    device = input_ids.device
    _sync(device)
    start = clock()
    model(input_ids=input_ids, use_cache=True)
    _sync(device)
    return clock() - start


@torch.no_grad()
def time_decode(model, prompt: torch.Tensor, new_tokens: int, clock: Clock = time.perf_counter) -> float:
    """Seconds per generated token of greedy decoding, excluding the prompt's prefill."""
    if new_tokens < 2:
        raise ValueError("decode timing needs at least 2 new tokens")
    tokens = _TokenClock(clock)
    pad = model.generation_config.pad_token_id
    if pad is None:
        pad = model.generation_config.eos_token_id
    if isinstance(pad, list):
        pad = pad[0]
    model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        do_sample=False,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        use_cache=True,
        pad_token_id=pad,
        streamer=tokens,
    )
    _sync(prompt.device)
    if len(tokens.times) != new_tokens:
        raise RuntimeError(f"generate produced {len(tokens.times)} tokens instead of {new_tokens}")
    return (tokens.times[-1] - tokens.times[0]) / (new_tokens - 1)


def linear_macs_per_token(model: torch.nn.Module) -> int:
    """Multiply-accumulates per token of every Linear layer (in × out each), LM head included."""
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Linear, Conv1D)))


def attention_widths(model: torch.nn.Module) -> list[int]:
    """Per layer, the width (query heads × head_dim) of attention: `q_proj` out features, else the config's."""
    widths = [m.out_features for name, m in model.named_modules()
              if name.endswith("q_proj") and isinstance(m, torch.nn.Linear)]
    if widths:
        return widths  # per layer, so pruned models with per-layer head counts are right
    config = model.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return [heads * head_dim] * config.num_hidden_layers


def macs_per_token(model: torch.nn.Module, context: int = DEFAULT_MACS_CONTEXT) -> int:
    """Linear MACs per token plus attention at `context`: Σ_layers 2 × width × context (Q·Kᵀ and A·V)."""
    return linear_macs_per_token(model) + sum(2 * width * context for width in attention_widths(model))


def _rss_status(field: str) -> int | None:
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # "5" resets VmHWM to the current RSS
        return True
    except OSError:
        return False



def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not every platform has one
        return None


def machine_state(device: torch.device, load: Sequence[float]) -> Machine:
    """The machine figures were taken on, with the load averages sampled while they were."""
    return Machine(device=str(device), device_name=_device_name(device), cpu_count=os.cpu_count() or 1,
                   torch_threads=torch.get_num_threads(), load=tuple(load))


@dataclass(frozen=True)
class ModelRounds:
    """One timed model: its size and its tok/s in every timed round."""

    name: str
    params: int
    macs_per_token: int
    rounds: dict[str, tuple[float, ...]]  # metric ("prefill" | "decode") → tok/s per round

    def rate(self, metric: str) -> Spread:
        return Spread.of(self.rounds[metric])

    def ratio(self, reference: ModelRounds, metric: str) -> Spread:
        """Tok/s over the reference's in the same round, over the rounds."""
        return Spread.of([a / b for a, b in zip(self.rounds[metric], reference.rounds[metric], strict=True)])


def spread_warnings(models: Sequence[ModelRounds], machine: Machine, max_spread: float) -> tuple[str, ...]:
    """What makes the figures untrustworthy: a busy machine, rounds (or ratios to the first model) that disagree."""
    warnings = []
    if machine.busy:
        warnings.append(f"busy machine: load average up to {max(machine.load):.1f} on {machine.cpu_count} cores; "
                        "absolute tok/s are pessimistic, compare only ratios measured together")
    rates = [f"{m.name} {metric} {m.rate(metric).relative:.0%}" for m in models for metric in METRICS
             if m.rate(metric).relative > max_spread]
    if rates:
        warnings.append(f"tok/s varied across rounds by more than {max_spread:.0%} ({', '.join(rates)}): "
                        "the machine's load changed during the measurement")
    ratios = [f"{m.name} {metric} {m.ratio(models[0], metric).relative:.0%}" for m in models[1:] for metric in METRICS
              if m.ratio(models[0], metric).relative > max_spread]
    if ratios:
        warnings.append(f"ratios to {models[0].name} varied across rounds by more than {max_spread:.0%} "
                        f"({', '.join(ratios)}): the load changed within rounds; read the median and its range, "
                        "or rerun with more rounds or on a quieter machine")
    return tuple(warnings)


def _check_rounds(rounds: int, warmup: int) -> None:
    for name, value, least in (("rounds", rounds, 1), ("warm-up rounds", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise LorashearError(f"speed {name} must be an integer ≥ {least}, got {value!r}")


def _time_rounds(
    models: Mapping[str, torch.nn.Module],
    *,
    rounds: int,
    warmup: int,
    prefill_tokens: int,
    decode_tokens: int,
    decode_prompt_tokens: int,
    macs_context: int,
    clock: Clock,
    log: Callable[[str], None],
) -> tuple[tuple[ModelRounds, ...], list[float]]:
    """Every model's tok/s in each timed round, and the 1-minute load average sampled around the rounds."""
    _check_rounds(rounds, warmup)
    inputs = {name: (_random_ids(model, prefill_tokens, seed=0).to(_device_of(model)),
                     _random_ids(model, decode_prompt_tokens, seed=1).to(_device_of(model)))
              for name, model in models.items()}
    rates = {name: {metric: [] for metric in METRICS} for name in models}
    loads = [_load_average()]
    for index in range(warmup + rounds):
        # Every model's prefill, then every model's decode, back to back: the models of one round
        # share its machine load, so their ratio in that round is fair even when the load moves.
        prefill = {name: prefill_tokens / time_prefill(model, inputs[name][0], clock) for name, model in models.items()}
        decode = {name: 1.0 / time_decode(model, inputs[name][1], decode_tokens, clock)
                  for name, model in models.items()}
        loads.append(_load_average())
        if index < warmup:  # kernels, allocator and caches settle
            continue
        for name in models:
            rates[name]["prefill"].append(prefill[name])
            rates[name]["decode"].append(decode[name])
        log(f"speed round {index - warmup + 1}/{rounds}: " + ", ".join(
            f"{name} {prefill[name]:.0f} / {decode[name]:.1f} tok/s" for name in models))
    timed = tuple(ModelRounds(name, count_parameters(model), macs_per_token(model, macs_context),
                              {metric: tuple(values) for metric, values in rates[name].items()})
                  for name, model in models.items())
    return timed, [load for load in loads if load is not None]


def measure_speed(
    model,
    *,
    prefill_tokens: int = DEFAULT_PREFILL_TOKENS,
    decode_tokens: int = DEFAULT_DECODE_TOKENS,
    decode_prompt_tokens: int = DEFAULT_DECODE_PROMPT_TOKENS,
    repeats: int = DEFAULT_REPEATS,
    macs_context: int = DEFAULT_MACS_CONTEXT,
    max_spread: float = DEFAULT_MAX_SPREAD,
    clock: Clock = time.perf_counter,
) -> SpeedResult:
    """One model's absolute prefill/decode tok/s (median of `repeats` rounds after a warm-up round), peak
    memory, size and MACs. To compare models use `compare`, which alternates them in one window."""
    device = _device_of(model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        measure = "cuda_max_allocated"
    else:
        baseline = _rss_status("VmRSS") or 0
        measure = "cpu_peak_rss_increase" if _reset_peak_rss() else "cpu_peak_rss"

    (timed,), loads = _time_rounds(
        {"model": model}, rounds=repeats, warmup=DEFAULT_WARMUP, prefill_tokens=prefill_tokens,
        decode_tokens=decode_tokens, decode_prompt_tokens=decode_prompt_tokens, macs_context=macs_context,
        clock=clock, log=lambda _: None)

    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        high_water = _rss_status("VmHWM") or 0
        peak = high_water - baseline if measure == "cpu_peak_rss_increase" else high_water

    machine = machine_state(device, loads)
    return SpeedResult(
        device=str(device),
        prefill_tokens_per_s=timed.rate("prefill").median,
        decode_tokens_per_s=timed.rate("decode").median,
        peak_memory_bytes=int(peak),
        memory_measure=measure,
        params=timed.params,
        linear_macs_per_token=linear_macs_per_token(model),
        macs_per_token=timed.macs_per_token,
        macs_context=macs_context,
        prefill_tokens=prefill_tokens,
        decode_tokens=decode_tokens,
        decode_prompt_tokens=decode_prompt_tokens,
        repeats=repeats,
        machine=machine,
        warnings=spread_warnings([timed], machine, max_spread),
    )


def machine_notes(machine: Machine | None, warnings: Sequence[str]) -> list[str]:
    """Markdown lines that go under every speed table: the machine, then a list of warnings."""
    lines = [f"Machine: {machine.describe()}.", ""] if machine is not None else []
    return lines + [f"- **Warning:** {warning}." for warning in warnings] + ([""] if warnings else [])


@dataclass(frozen=True)
class SpeedComparison:
    """Models timed side by side in one window; the first is the reference of every ratio."""

    models: tuple[ModelRounds, ...]
    machine: Machine
    rounds: int
    warmup: int
    prefill_tokens: int
    decode_tokens: int
    decode_prompt_tokens: int
    macs_context: int
    max_spread: float
    # False: the models did not fit in memory together and were timed one after another (`compare_models`)
    alternated: bool = True

    @property
    def reference(self) -> ModelRounds:
        return self.models[0]

    @property
    def warnings(self) -> tuple[str, ...]:
        return spread_warnings(self.models, self.machine, self.max_spread)

    def model(self, name: str) -> ModelRounds:
        return next(model for model in self.models if model.name == name)

    def ratio(self, name: str, metric: str) -> Spread:
        """`name`'s tok/s over the reference's, paired by round: median and min–max."""
        return self.model(name).ratio(self.reference, metric)

    def ratio_text(self, name: str, metric: str) -> str:
        if name == self.reference.name:
            return "reference"
        r = self.ratio(name, metric)
        return f"{r.median:.2f}× ({r.min:.2f}–{r.max:.2f})"

    def describe(self) -> str:
        """One sentence: what was timed and how."""
        if not self.alternated:
            return (f"Models timed one after another (they do not fit in memory together): each {self.rounds} rounds "
                    f"after {self.warmup} warm-up of its prefill ({self.prefill_tokens} tokens, batch 1) and greedy "
                    f"decode ({self.decode_tokens} new tokens after a {self.decode_prompt_tokens}-token prompt, "
                    f"batch 1); ratios to {self.reference.name} pair round i of each model, taken minutes apart, so "
                    "a change of machine load between the blocks moves them: median (min–max).")
        return (f"Models alternated in one window: {self.rounds} rounds after {self.warmup} warm-up, each timing "
                f"every model's prefill ({self.prefill_tokens} tokens, batch 1) then its greedy decode "
                f"({self.decode_tokens} new tokens after a {self.decode_prompt_tokens}-token prompt, batch 1); "
                f"tok/s are medians over rounds, ratios to {self.reference.name} are paired by round: "
                "median (min–max).")

    def to_markdown(self) -> str:
        """A table (absolute tok/s beside the ratios), how it was measured, the machine and any warnings."""
        ref = self.reference.name
        lines = [self.describe(), "",
                 f"| model | params | prefill tok/s | decode tok/s | prefill × {ref} | decode × {ref} "
                 f"| MACs/token (ctx {self.macs_context}) |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
        for m in self.models:
            lines.append(f"| {m.name} | {m.params:,} | {m.rate('prefill').median:.0f} | {m.rate('decode').median:.1f} "
                         f"| {self.ratio_text(m.name, 'prefill')} | {self.ratio_text(m.name, 'decode')} "
                         f"| {m.macs_per_token:,} |")
        return "\n".join([*lines, "", *machine_notes(self.machine, self.warnings)])

    def to_dict(self) -> dict:
        """Settings, machine, warnings, and per model its per-round tok/s with their medians and ratios."""
        data = asdict(self)
        data["reference"] = self.reference.name
        data["warnings"] = list(self.warnings)
        for entry, model in zip(data["models"], self.models, strict=True):
            entry["tokens_per_s"] = {metric: asdict(model.rate(metric)) for metric in METRICS}
            entry["ratio"] = {metric: asdict(model.ratio(self.reference, metric)) for metric in METRICS}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> SpeedComparison:
        """The comparison `to_dict` wrote (medians, ratios and warnings are recomputed from the rounds)."""
        models = tuple(ModelRounds(m["name"], m["params"], m["macs_per_token"],
                                   {metric: tuple(values) for metric, values in m["rounds"].items()})
                       for m in data["models"])
        machine = Machine.from_dict(data["machine"])
        settings = {key: data[key] for key in ("rounds", "warmup", "prefill_tokens", "decode_tokens",
                                               "decode_prompt_tokens", "macs_context", "max_spread")}
        return cls(models=models, machine=machine, alternated=data.get("alternated", True), **settings)


def compare(
    models: Mapping[str, torch.nn.Module],
    *,
    rounds: int = DEFAULT_ROUNDS,
    warmup: int = DEFAULT_WARMUP,
    prefill_tokens: int = DEFAULT_PREFILL_TOKENS,
    decode_tokens: int = DEFAULT_DECODE_TOKENS,
    decode_prompt_tokens: int = DEFAULT_DECODE_PROMPT_TOKENS,
    macs_context: int = DEFAULT_MACS_CONTEXT,
    max_spread: float = DEFAULT_MAX_SPREAD,
    clock: Clock = time.perf_counter,
    log: Callable[[str], None] = lambda _: None,
) -> SpeedComparison:
    """Time `models` side by side (alternating within every round) and their tok/s ratios to the first one,
    with the machine and its load; warns when the machine was busy or the rounds disagree."""
    if not models:
        raise LorashearError("speed comparison needs at least one model")
    timed, loads = _time_rounds(models, rounds=rounds, warmup=warmup, prefill_tokens=prefill_tokens,
                                decode_tokens=decode_tokens, decode_prompt_tokens=decode_prompt_tokens,
                                macs_context=macs_context, clock=clock, log=log)
    machine = machine_state(_device_of(next(iter(models.values()))), loads)
    return SpeedComparison(models=timed, machine=machine, rounds=rounds, warmup=warmup, prefill_tokens=prefill_tokens, decode_tokens=decode_tokens,
                           decode_prompt_tokens=decode_prompt_tokens, macs_context=macs_context,
                           max_spread=max_spread)


def available_memory(device: torch.device) -> int | None:
    """Bytes a new model could take on `device`: CUDA's free memory, or the host's MemAvailable (None: unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


# Loaded models' weights may take this share of the available memory for them to be timed together (the rest:
# activations, KV caches and the allocator's slack).
FIT_SHARE = 0.8


def compare_models(
    loaders: Mapping[str, Callable[[], torch.nn.Module]],
    weight_bytes: Mapping[str, int],
    device: torch.device,
    *,
    log: Callable[[str], None] = lambda _: None,
    available: int | None = None,
    **settings,
) -> SpeedComparison:
    """`compare` of models given as loaders: when their weights (`weight_bytes`, estimated before loading) fit
    in `FIT_SHARE` of the device's available memory together, all are loaded and alternated; otherwise each is
    loaded, timed alone and freed in turn (the comparison says so: `alternated` False)."""
    available = available_memory(device) if available is None else available
    needed = sum(weight_bytes.values())
    if available is None or needed <= FIT_SHARE * available:
        return compare({name: load() for name, load in loaders.items()}, log=log, **settings)
    log(f"speed: the models' weights ({needed / 2**30:.1f} GiB) do not fit in {FIT_SHARE:.0%} of the "
        f"{available / 2**30:.1f} GiB available together: timing them one after another")
    rounds, warmup = settings.get("rounds", DEFAULT_ROUNDS), settings.get("warmup", DEFAULT_WARMUP)
    clock = settings.get("clock", time.perf_counter)
    timing = {key: settings.get(key, default) for key, default in (
        ("prefill_tokens", DEFAULT_PREFILL_TOKENS), ("decode_tokens", DEFAULT_DECODE_TOKENS),
        ("decode_prompt_tokens", DEFAULT_DECODE_PROMPT_TOKENS), ("macs_context", DEFAULT_MACS_CONTEXT))}
    timed, loads = [], []
    for name, load in loaders.items():
        model = load()
        (rounds_of_model,), model_loads = _time_rounds({name: model}, rounds=rounds, warmup=warmup, clock=clock,
                                                       log=log, **timing)
        timed.append(rounds_of_model)
        loads += model_loads
        del model
        release_memory(device)
    return SpeedComparison(models=tuple(timed), machine=machine_state(device, loads), rounds=rounds, warmup=warmup,
                           max_spread=settings.get("max_spread", DEFAULT_MAX_SPREAD), alternated=False, **timing)
