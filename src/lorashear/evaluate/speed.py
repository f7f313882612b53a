"""Inference speed, memory and compute of a causal LM.

- prefill: one forward of a `prefill_tokens`-token input (batch 1) building the KV cache;
- decode: greedy `generate` (batch 1, KV cache) of exactly `decode_tokens` new tokens
  (min_new_tokens = max_new_tokens) after a `decode_prompt_tokens` prompt; the rate is timed from
  the first generated token to the last, so the prompt's prefill is excluded;
- each is the median of `repeats` timed runs after one warm-up; inputs are fixed random ids
  (speed does not depend on the text);
- memory: on CUDA the peak allocated bytes (torch.cuda.max_memory_allocated) during the runs;
  on CPU the peak resident-set increase of the process during the runs (Linux VmHWM, reset
  through /proc/self/clear_refs before them), weights excluded since they are already resident;
- MACs per token: `linear_macs_per_token` is Σ in×out over Linear layers (the LM head included;
  embedding lookups cost none); `macs_per_token` adds attention for a token that attends to
  `context` positions: 2 × (query heads × head_dim) × context per layer (scores Q·Kᵀ and the
  weighted sum of V). The tests check this formula against torch's FlopCounterMode.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers.generation.streamers import BaseStreamer

from lorashear.models import count_parameters

DEFAULT_PREFILL_TOKENS = 512
DEFAULT_DECODE_TOKENS = 128
DEFAULT_DECODE_PROMPT_TOKENS = 32
DEFAULT_REPEATS = 3
DEFAULT_MACS_CONTEXT = 512


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

    def to_dict(self) -> dict:
        return asdict(self)


class _TokenClock(BaseStreamer):
    """Records when `generate` emits each new token (its first `put` is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _random_ids(model, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    vocab = model.get_input_embeddings().num_embeddings
    return torch.randint(0, vocab, (1, length), generator=generator)


def _median_of(fn, repeats: int) -> float:
    fn()  # warm-up: kernels, allocator, caches
    return statistics.median(fn() for _ in range(repeats))


@torch.no_grad()
def time_prefill(model, input_ids: torch.Tensor) -> float:
    """Seconds for one forward over `input_ids` that builds the KV cache."""
    device = input_ids.device
    _sync(device)
    start = time.perf_counter()
    model(input_ids=input_ids, use_cache=True)
    _sync(device)
    return time.perf_counter() - start


@torch.no_grad()
def time_decode(model, prompt: torch.Tensor, new_tokens: int) -> float:
    """Seconds per generated token of greedy decoding, excluding the prompt's prefill."""
    if new_tokens < 2:
        raise ValueError("decode timing needs at least 2 new tokens")
    clock = _TokenClock()
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
        streamer=clock,
    )
    _sync(prompt.device)
    if len(clock.times) != new_tokens:
        raise RuntimeError(f"generate produced {len(clock.times)} tokens instead of {new_tokens}")
    return (clock.times[-1] - clock.times[0]) / (new_tokens - 1)


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


def measure_speed(
    model,
    *,
    prefill_tokens: int = DEFAULT_PREFILL_TOKENS,
    decode_tokens: int = DEFAULT_DECODE_TOKENS,
    decode_prompt_tokens: int = DEFAULT_DECODE_PROMPT_TOKENS,
    repeats: int = DEFAULT_REPEATS,
    macs_context: int = DEFAULT_MACS_CONTEXT,
) -> SpeedResult:
    """Prefill and decode throughput (median of `repeats` after a warm-up), peak memory, size and MACs."""
    device = next(model.parameters()).device
    prefill_ids = _random_ids(model, prefill_tokens, seed=0).to(device)
    prompt = _random_ids(model, decode_prompt_tokens, seed=1).to(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        measure = "cuda_max_allocated"
    else:
        baseline = _rss_status("VmRSS") or 0
        measure = "cpu_peak_rss_increase" if _reset_peak_rss() else "cpu_peak_rss"

    prefill_s = _median_of(lambda: time_prefill(model, prefill_ids), repeats)
    per_token_s = _median_of(lambda: time_decode(model, prompt, decode_tokens), repeats)

    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        high_water = _rss_status("VmHWM") or 0
        peak = high_water - baseline if measure == "cpu_peak_rss_increase" else high_water

    return SpeedResult(
        device=str(device),
        prefill_tokens_per_s=prefill_tokens / prefill_s,
        decode_tokens_per_s=1.0 / per_token_s,
        peak_memory_bytes=int(peak),
        memory_measure=measure,
        params=count_parameters(model),
        linear_macs_per_token=linear_macs_per_token(model),
        macs_per_token=macs_per_token(model, macs_context),
        macs_context=macs_context,
        prefill_tokens=prefill_tokens,
        decode_tokens=decode_tokens,
        decode_prompt_tokens=decode_prompt_tokens,
        repeats=repeats,
    )
