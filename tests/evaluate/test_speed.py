import json
import os

import pytest
import torch
from tiny_models import single_thread  # noqa: F401  (autouse: tiny models time fastest on one thread)
from torch.utils.flop_counter import FlopCounterMode

from lorashear import LorashearError
from lorashear.evaluate.report import EvalResult
from lorashear.evaluate.speed import (
    METRICS,
    SpeedComparison,
    Spread,
    attention_widths,
    compare,
    compare_models,
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
    markdown = EvalResult("tiny", 1, speed=result).to_markdown()
    assert "| decode tok/s (greedy, 4 new, batch 1) |" in markdown
    assert "absolute, single model" in markdown and f"Machine: {result.machine.describe()}" in markdown
    assert as_json["machine"]["torch_threads"] == torch.get_num_threads() and "warnings" in as_json


PREFILL = 16  # tokens; the fake machine tells a prefill from a decode step by its length


class FakeMachine:
    """A clock that only moves when a model runs: each forward costs the model's cost × the current load.

    The reference model's prefill opens every round (warm-up included, round 0), so `slow_rounds`
    {round: factor} loads the whole round and `slow_model` {round: factor} only the other model's runs.
    """

    def __init__(self, slow_rounds=None, slow_model=None):
        self.now, self.round = 0.0, -1
        self.slow_rounds, self.slow_model = slow_rounds or {}, slow_model or {}

    def clock(self) -> float:
        return self.now

    def attach(self, model, cost: float, reference: bool):
        def hook(module, args, kwargs):
            if reference and kwargs["input_ids"].shape[1] == PREFILL:
                self.round += 1
            load = self.slow_rounds.get(self.round, 1.0) * (1.0 if reference else self.slow_model.get(self.round, 1.0))
            self.now += cost * load

        return model.register_forward_pre_hook(hook, with_kwargs=True)


def _compare_on(machine: FakeMachine, make_tiny_llama, **kwargs):
    dense, pruned = make_tiny_llama(), make_tiny_llama(intermediate_size=64)
    machine.attach(dense, cost=1.25, reference=True)
    machine.attach(pruned, cost=1.0, reference=False)
    return compare({"dense": dense, "pruned": pruned}, rounds=3, warmup=1, prefill_tokens=PREFILL, decode_tokens=4,
                   decode_prompt_tokens=4, clock=machine.clock, **kwargs)


@pytest.fixture
def quiet_load(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))


def test_compare_alternates_models_and_reports_paired_ratios(make_tiny_llama, quiet_load):
    result = _compare_on(FakeMachine(), make_tiny_llama)
    assert [m.name for m in result.models] == ["dense", "pruned"] and result.reference.name == "dense"
    for metric in METRICS:
        assert result.ratio("pruned", metric) == Spread(1.25, 1.25, 1.25)
        assert len(result.model("dense").rounds[metric]) == 3  # warm-up not counted
    assert result.model("dense").rate("prefill").median == pytest.approx(PREFILL / 1.25)
    assert result.model("pruned").rate("decode").median == pytest.approx(1.0)
    assert result.model("pruned").params < result.model("dense").params
    assert result.warnings == ()
    assert result.machine.load == (0.5,) * 5 and result.machine.torch_threads == torch.get_num_threads()


def test_a_load_spike_on_one_round_keeps_the_ratio_and_warns(make_tiny_llama, quiet_load):
    result = _compare_on(FakeMachine(slow_rounds={2: 10.0}), make_tiny_llama)
    for metric in METRICS:  # both models ran under the spike: the paired ratio does not move
        assert result.ratio("pruned", metric) == Spread(1.25, 1.25, 1.25)
    assert result.model("dense").rate("prefill") == Spread(PREFILL / 1.25, PREFILL / 12.5, PREFILL / 1.25)
    assert result.warnings == ("tok/s varied across rounds by more than 15% (dense prefill 90%, dense decode 90%, "
                               "pruned prefill 90%, pruned decode 90%): the machine's load changed during the "
                               "measurement",)
    assert f"**Warning:** {result.warnings[0]}." in result.to_markdown()


def test_a_spike_on_one_model_moves_only_the_ratios_range(make_tiny_llama, quiet_load):
    result = _compare_on(FakeMachine(slow_model={2: 4.0}), make_tiny_llama)
    ratio = result.ratio("pruned", "decode")
    assert ratio.median == pytest.approx(1.25) and ratio.max == pytest.approx(1.25)
    assert ratio.min == pytest.approx(1.25 / 4)
    assert result.warnings[-1].startswith("ratios to dense varied across rounds by more than 15% "
                                          "(pruned prefill 75%, pruned decode 75%)")


def test_a_busy_machine_is_said_next_to_the_figures(make_tiny_llama, monkeypatch):
    busy = (os.cpu_count() or 1) + 1.0
    monkeypatch.setattr(os, "getloadavg", lambda: (busy, busy, busy))
    result = _compare_on(FakeMachine(), make_tiny_llama)
    assert result.machine.busy and result.warnings[0].startswith(f"busy machine: load average up to {busy:.1f}")
    markdown = result.to_markdown()
    assert "| pruned | " in markdown and "| 1.25× (1.25–1.25) | 1.25× (1.25–1.25) |" in markdown
    assert f"load average {busy:.1f}–{busy:.1f}" in markdown and "**Warning:** busy machine" in markdown


def test_comparison_json_keeps_every_round_and_reads_back(make_tiny_llama, quiet_load):
    result = _compare_on(FakeMachine(slow_rounds={2: 3.0}), make_tiny_llama)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["reference"] == "dense" and len(data["models"][1]["rounds"]["decode"]) == 3
    assert data["models"][1]["ratio"]["prefill"]["median"] == pytest.approx(1.25)
    assert data["machine"]["cpu_count"] == os.cpu_count() and data["warnings"]
    assert SpeedComparison.from_dict(data) == result


@pytest.mark.parametrize("kwargs, message", [({"rounds": 0}, "rounds must be"), ({"warmup": -1}, "warm-up")])
def test_compare_rejects_bad_rounds(tiny_model, kwargs, message):
    with pytest.raises(LorashearError, match=message):
        compare({"m": tiny_model}, **kwargs)
    with pytest.raises(LorashearError, match="at least one model"):
        compare({})


def _loaders(machine: FakeMachine, make_tiny_llama, alive: list):
    """Loaders of the dense and pruned tiny models on the fake machine; each load first records which models
    loaded earlier are still alive (weak references)."""
    import gc
    import weakref

    refs = []

    def loader(cost: float, reference: bool, **size):
        def load():
            gc.collect()
            alive.append(sum(ref() is not None for ref in refs))
            model = make_tiny_llama(**size)
            machine.attach(model, cost, reference)
            refs.append(weakref.ref(model))
            return model
        return load

    return {"dense": loader(1.25, True), "pruned": loader(1.0, False, intermediate_size=64)}


@pytest.mark.parametrize("available, alternated", [(2_000, True), (1_000, False)])
def test_models_are_alternated_only_when_they_fit_together(make_tiny_llama, quiet_load, available, alternated):
    """Weights of 1,100 bytes: together in 2,000 available (80%: 1,600), one after another in 1,000 (each freed
    before the next loads). The paired ratios are the same on a quiet machine; the comparison says how it timed."""
    machine, alive = FakeMachine(), []
    result = compare_models(_loaders(machine, make_tiny_llama, alive), {"dense": 600, "pruned": 500},
                            torch.device("cpu"), available=available, rounds=3, warmup=1, prefill_tokens=PREFILL,
                            decode_tokens=4, decode_prompt_tokens=4, clock=machine.clock)
    assert result.alternated is alternated and alive == ([0, 1] if alternated else [0, 0])
    for metric in METRICS:
        assert result.ratio("pruned", metric) == Spread(1.25, 1.25, 1.25)
    assert ("one after another" in result.to_markdown()) is not alternated
    assert SpeedComparison.from_dict(json.loads(json.dumps(result.to_dict()))) == result
