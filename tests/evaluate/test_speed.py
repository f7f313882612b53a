import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lorashear.evaluate.report import EvalResult
from lorashear.evaluate.speed import (
    attention_widths,
    linear_macs_per_token,
    macs_per_token,
    measure_speed,
    time_decode,
)
from lorashear.models import count_parameters


def test_linear_macs_are_the_linear_shapes(tiny_model, tokenizer):
    vocab, hidden, mlp, layers = len(tokenizer), 64, 128, 2
    q, kv = 4 * 16, 2 * 16
    per_layer = hidden * q + 2 * hidden * kv + q * hidden + 3 * hidden * mlp
    assert linear_macs_per_token(tiny_model) == layers * per_layer + hidden * vocab  # + LM head
    assert attention_widths(tiny_model) == [q, q]


def test_macs_per_token_matches_torch_flop_counter(make_tiny_llama):
    model = make_tiny_llama(attn_implementation="eager")  # eager attention is plain matmuls the counter sees
    context = 32
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(input_ids=torch.arange(context)[None], use_cache=False)
    counts = counter.get_flop_counts()
    # Rotary position angles are a small matmul outside the layers; they are not per-token model compute.
    rotary = sum(counts.get("LlamaForCausalLM.model.rotary_emb", {}).values())
    assert (counter.get_total_flops() - rotary) // 2 == context * macs_per_token(model, context)


def test_attention_widths_follow_pruned_layers(make_tiny_llama):
    model = make_tiny_llama()
    attn = model.model.layers[1].self_attn
    attn.q_proj = torch.nn.Linear(64, 32, bias=False)  # a layer left with 2 of its 4 query heads
    assert attention_widths(model) == [64, 32]


def test_decode_really_generates_the_requested_tokens(tiny_model):
    prompt = torch.tensor([[1, 2, 3, 4]])
    assert time_decode(tiny_model, prompt, new_tokens=6) > 0
    with pytest.raises(ValueError):
        time_decode(tiny_model, prompt, new_tokens=1)


def test_measure_speed_reports_every_figure(tiny_model):
    result = measure_speed(tiny_model, prefill_tokens=32, decode_tokens=4, decode_prompt_tokens=4, repeats=1,
                           macs_context=64)
    assert result.prefill_tokens_per_s > 0 and result.decode_tokens_per_s > 0
    assert result.params == count_parameters(tiny_model)
    assert result.macs_per_token == result.linear_macs_per_token + 2 * (2 * 64 * 64)
    assert result.memory_measure in {"cpu_peak_rss_increase", "cpu_peak_rss", "cuda_max_allocated"}
    assert result.peak_memory_bytes >= 0
    as_json = EvalResult(model="tiny", params=result.params, speed=result).to_dict()["speed"]
    assert as_json["params"] == result.params and as_json["memory_measure"] == result.memory_measure
    assert {"prefill_tokens_per_s", "decode_tokens_per_s", "peak_memory_bytes", "macs_per_token"} <= set(as_json)
    assert "| decode tok/s (greedy, 4 new, batch 1) |" in EvalResult("tiny", 1, speed=result).to_markdown()
