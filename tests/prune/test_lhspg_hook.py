"""LhspgHook driven by a hand-written AdamW loop on a tiny peft llama: zeros at period ends that stay
zero (Adam moments included), final ratio, unprunable groups kept, resume from the hook's state."""

from __future__ import annotations

import pytest
from lhspg_material import adamw as make_optimizer
from lhspg_material import drive, lora_model, moments_zero, protected_graph, resumed_run, run_of
from tiny_models import single_thread  # noqa: F401

from lorashear.errors import LorashearError
from lorashear.prune.api import tied_aliases
from lorashear.prune.lhspg import LhspgConfig, LhspgHook
from lorashear.prune.plan import ParamCounter

KINDS = ("kv_group", "mlp_channel")
RATIO, STEPS = 0.25, 14  # 4 warm-up steps (share 0.25), 3 periods of 3 steps, 1 step after


@pytest.fixture(scope="module")
def graph():
    return protected_graph(KINDS)


def new_hook(graph, model, **options) -> LhspgHook:
    # The LoRA-product saliency needs no calibration data (the default, taylor, is covered end to end).
    config = LhspgConfig(warmup_share=0.25, periods=3, **{"saliency": "lhspg", **options})
    return LhspgHook(config, graph, RATIO, KINDS, aliases=tied_aliases(model))


@pytest.mark.parametrize("variant", ["projection", "fade"])
def test_redundant_groups_reach_zero_and_stay_zero(graph, variant):
    model = lora_model()
    optimizer = make_optimizer(model)
    hook = new_hook(graph, model, variant=variant)
    run = run_of(model, optimizer, STEPS)
    hook.on_start(run)
    seen_zero: set[int] = set()

    def check(run):
        period = hook.schedule.position(run.step - 1)
        if period is not None and period[1] == hook.schedule.period_steps - 1:  # a period's end
            assert set(hook.periods[period[0]]) <= hook.zeroed
        for i in seen_zero | hook.zeroed:  # zeros stay zero, Adam moments included
            assert hook.variables.is_zero(i) and moments_zero(optimizer, hook.variables, i)
        seen_zero.update(hook.zeroed)

    records = drive(hook, run, STEPS, check)
    hook.on_end(run)
    assert len(hook.periods) == 3 and all(hook.periods)
    redundant = hook.redundant()
    assert hook.zeroed == set(redundant)
    assert not any(graph.groups[i].unprunable for i in redundant)
    counter = ParamCounter(graph, tied_aliases(model))
    counter.add([graph.groups[i] for i in redundant])
    assert abs(counter.removed_params / counter.total - RATIO) < 0.01
    last = records[-1]
    assert last["period"] == 3 and last["sparsity"] == pytest.approx(counter.removed_params / counter.total)
    assert last["live_params"] == counter.total - counter.removed_params
    assert sum(last["zeroed"].values()) == len(redundant)
    assert records[0]["zeroed"] == {} and records[4]["period"] == 1


def test_resume_from_the_hook_state_gives_the_same_run(graph):
    def start():
        model = lora_model()  # seeds the global RNG: the same batches in both runs
        optimizer = make_optimizer(model)
        hook = new_hook(graph, model)
        run = run_of(model, optimizer, STEPS)
        hook.on_start(run)
        return model, hook, run

    hook_a, resumed = resumed_run(start, lambda model: new_hook(graph, model), STEPS, 8)  # cut in period 2
    assert resumed.periods == hook_a.periods and resumed.zeroed == hook_a.zeroed


def test_an_unreachable_ratio_fails_before_training(graph):
    model = lora_model()
    hook = LhspgHook(LhspgConfig(saliency="lhspg"), graph, 0.6, KINDS, aliases=tied_aliases(model))
    with pytest.raises(LorashearError, match="not reachable"):
        hook.on_start(run_of(model, make_optimizer(model), STEPS))
