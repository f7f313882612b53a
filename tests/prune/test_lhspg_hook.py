"""LhspgHook driven by a hand-written AdamW loop on a tiny peft llama: zeros at period ends that stay
zero (Adam moments included), final ratio, unprunable groups kept, resume from the hook's state."""

from __future__ import annotations

import pytest
import torch
from lhspg_material import BATCHES, drive, lora_model, moments_zero, protected_graph, resumed_run, run_of
from lhspg_material import adamw as make_optimizer
from tiny_models import single_thread  # noqa: F401

from lorashear.errors import LorashearError
from lorashear.graph.counting import ParamCounter
from lorashear.importance import ScoreContext
from lorashear.prune.api import tied_aliases
from lorashear.prune.lhspg import LhspgConfig, LhspgHook

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


CHOICES, WINDOWS = (4, 6, 9), {3, 4, 5, 6, 8, 9}  # --saliency-steps 2 on the 14-step schedule


def saliency_window_run(graph, scale=lambda step: 1.0, overflow: int | None = None):
    """The hook with --saliency-steps 2 over a hand loop whose backward takes the loss × the step's fp16 loss
    scale (`overflow`: that step's gradients are infinite and its optimizer step skipped, as the scaler does),
    beside autograd's mean gradient of each window's finite steps. Checks at every step that the frozen weights
    take gradients in windows only and hold their sum until the choice. Returns (hook, what each choice read,
    the expected means), both keyed by the step count at the choice."""
    from types import SimpleNamespace

    model = lora_model()
    optimizer = make_optimizer(model)
    hook = new_hook(graph, model, saliency="taylor", saliency_steps=2)
    run = run_of(model, optimizer, STEPS)
    scaler = SimpleNamespace(scale=1.0)
    scaler.get_scale = lambda: scaler.scale
    run.accelerator.scaler = scaler
    hook.on_start(run)
    assert hook.schedule.selection_steps() == list(CHOICES)  # period 0's first step, then each period's last
    base = ScoreContext(model, graph, kinds=KINDS).scored_parameters()
    read = {}
    window_gradients = hook._window_gradients
    hook._window_gradients = lambda run: read.setdefault(run.step, {n: g.clone() for n, g in window_gradients(run).items()})
    expected, sums, count = {}, {}, 0
    for step in range(STEPS):
        scaler.scale = scale(step)
        hook.before_step(run)
        assert all(p.requires_grad == (step in WINDOWS) for p in base.values())
        batch = BATCHES[step % len(BATCHES)]
        model.train()
        loss = model(input_ids=batch, labels=batch).loss
        if step in WINDOWS and step != overflow:
            for name, g in zip(base, torch.autograd.grad(loss, list(base.values()), retain_graph=True), strict=True):
                sums[name] = sums.get(name, 0) + g
            count += 1
        if step == overflow:
            sums, count = {}, 0
        (loss * (float("inf") if step == overflow else scaler.scale)).backward()
        hook.before_optimizer_step(run)
        assert not any(p.requires_grad for p in base.values())
        if step != overflow:
            optimizer.step()
        optimizer.zero_grad()
        model.eval()
        run.step += 1
        if step in CHOICES:
            expected[run.step], sums, count = {n: g / count for n, g in sums.items()}, {}, 0
        hook.after_step(run, {})
        held = step in WINDOWS and step not in CHOICES and step != overflow  # a window's sum lives until its choice
        assert all((p.grad is not None) == held for p in base.values())
    return hook, read, expected


def assert_read_the_expected_means(read: dict, expected: dict) -> None:
    assert read.keys() == expected.keys() == {5, 7, 10}
    for step, grads in read.items():
        assert grads.keys() == expected[step].keys()
        for name, g in grads.items():
            torch.testing.assert_close(g, expected[step][name], rtol=1e-4, atol=1e-7, msg=f"step {step}: {name}")


def test_saliency_steps_score_on_the_mean_gradient_of_the_window(graph):
    """--saliency-steps 2: the frozen weights take gradients on the two steps that end at each choice (and on no
    other), summed in their .grad, the choice reads their mean (autograd's, step by step), and each window's
    gradients are freed after its choice."""
    hook, read, expected = saliency_window_run(graph)
    assert_read_the_expected_means(read, expected)
    assert hook.grad_steps == 0 and len(hook.periods) == 3


def test_saliency_steps_undo_a_changing_fp16_loss_scale_and_drop_an_overflowing_window(graph):
    """fp16: each step's gradients arrive multiplied by the scaler's current scale (2**(step % 3) here); the choice
    still reads the unscaled mean. An overflowing step (the scaler skips it) drops its window's sum so far: the
    choice after step 6 reads step 6 alone."""
    _, read, expected = saliency_window_run(graph, scale=lambda step: float(2 ** (step % 3)), overflow=5)
    assert_read_the_expected_means(read, expected)


def saved_bytes(model, batch) -> int:
    """Bytes of the distinct storages autograd keeps for backward over one training forward of `batch`."""
    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=batch, labels=batch).loss.backward()
    return sum(storages.values())


def test_a_saliency_window_step_runs_without_dropout_and_keeps_no_second_input(graph):
    """With LoRA dropout (the recipes' 0.05), a window step's weight gradients would keep every layer's input
    beside the dropped-out copy that LoRA's A keeps: the step runs with dropout off, so it keeps no more for
    backward than a step outside the windows; the step after the window has dropout on again. The step log
    marks window steps (benchmarks time them apart)."""
    from tiny_models import tiny_model

    from lorashear.train.lora import lora_model as trainable

    model = trainable(tiny_model("llama"), r=8, alpha=16, dropout=0.1, targets="all-linear")
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.training for m in dropouts)
    optimizer = make_optimizer(model)
    hook = new_hook(graph, model, saliency="taylor", saliency_steps=2)
    run = run_of(model, optimizer, STEPS)
    hook.on_start(run)
    batch, saved, logged = BATCHES[0], {}, {}
    for step in range(STEPS):
        hook.before_step(run)
        saved[step] = saved_bytes(model, batch)
        assert all(m.training == (step not in WINDOWS) for m in dropouts)
        hook.before_optimizer_step(run)
        assert all(m.training for m in dropouts)
        optimizer.step()
        optimizer.zero_grad()
        run.step += 1
        record = {}
        hook.after_step(run, record)
        logged[step] = record["saliency_window"]
    outside = max(saved[s] for s in range(STEPS) if s not in WINDOWS)
    assert all(saved[s] <= outside for s in WINDOWS)
    assert logged == {s: s in WINDOWS for s in range(STEPS)}


def test_resume_inside_a_saliency_window_gives_the_same_run(graph):
    def start():
        model = lora_model()
        optimizer = make_optimizer(model)
        hook = new_hook(graph, model, saliency="taylor", saliency_steps=3)
        run = run_of(model, optimizer, STEPS)
        hook.on_start(run)
        return model, hook, run

    # cut after steps 0-7: the window of the choice after step 9 (steps 7, 8, 9) has one step's gradients
    hook_a, resumed = resumed_run(start, lambda model: new_hook(graph, model, saliency="taylor", saliency_steps=3),
                                  STEPS, 8)
    assert resumed.periods == hook_a.periods and resumed.zeroed == hook_a.zeroed


def test_an_unreachable_ratio_fails_before_training(graph):
    model = lora_model()
    hook = LhspgHook(LhspgConfig(saliency="lhspg"), graph, 0.6, KINDS, aliases=tied_aliases(model))
    with pytest.raises(LorashearError, match="not reachable"):
        hook.on_start(run_of(model, make_optimizer(model), STEPS))
