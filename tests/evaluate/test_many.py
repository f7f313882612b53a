"""`evaluate_many`: one model loaded at a time for the figures, saved results reused, then the side-by-side timing."""

from __future__ import annotations

import functools

import pytest

import lorashear.evaluate.many as many
from lorashear.evaluate import EvalConfig, evaluate_config
from lorashear.evaluate.many import evaluate_many


@pytest.fixture(scope="module")
def folders(tmp_path_factory, make_tiny_llama, tokenizer):
    out = {}
    for name, width in (("dense", 128), ("pruned", 64)):
        folder = tmp_path_factory.mktemp(name)
        make_tiny_llama(intermediate_size=width).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        out[name] = str(folder)
    return out


def test_each_model_is_alone_in_memory_while_measured_and_saved_results_are_reused(folders, monkeypatch):
    import gc

    alive, loads = [], []

    def tracked_load(spec, **kwargs):
        gc.collect()  # what is still referenced is alive
        alive.append(sum(type(o).__name__.endswith("ForCausalLM") for o in gc.get_objects()))
        loads.append(spec)
        return real_load(spec, **kwargs)

    real_load = many.load_model
    monkeypatch.setattr(many, "load_model", tracked_load)
    config = EvalConfig(ppl_windows=1, tasks=(), speed=True)
    seen = []
    kept = evaluate_config(real_load(folders["dense"]), None, EvalConfig(ppl_corpora=(), tasks=(), speed=False),
                           model_name="dense", log=lambda _: None)
    done = evaluate_many(folders, config, speed=False, saved=lambda name: kept if name == "dense" else None,
                         on_result=lambda name, result: seen.append(name), log=lambda _: None)
    # the models alive at each load (other tests' fixtures included): as many at the second as at the first
    assert loads == [folders["dense"], folders["pruned"]] and alive[1] == alive[0]  # never two of these at once
    assert seen == ["pruned"] and done.results["dense"] is kept  # the saved one is not measured again
    assert done.results["pruned"].ppl["wiki"].ppl > 1 and done.speed is None
    assert done.sizes["pruned"]["params"] < done.sizes["dense"]["params"]
    assert done.sizes["dense"]["path"] == folders["dense"]
    assert done.sizes["dense"]["weights_bytes"] == 4 * done.sizes["dense"]["params"]  # float32


def test_speed_times_them_side_by_side(folders, monkeypatch):
    import lorashear.evaluate.speed as speed

    short = functools.partial(speed.compare, prefill_tokens=16, decode_tokens=2, decode_prompt_tokens=4)
    monkeypatch.setattr(speed, "compare", short)
    done = evaluate_many(folders, EvalConfig(ppl_corpora=(), tasks=(), speed=True), rounds=2, log=lambda _: None)
    assert [m.name for m in done.speed.models] == ["dense", "pruned"] and done.speed.rounds == 2
    assert all(r.speed is None for r in done.results.values())  # speed is only the comparison
