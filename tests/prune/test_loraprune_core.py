"""LoRAPrune's core: the cubic schedule and config checks by definition, and LorapruneHook driven by a
hand-written AdamW loop on a tiny peft llama (moving averages, masks that never revive, unprunable groups
kept, the final ratio, resume from the hook's state)."""

from __future__ import annotations

import pytest
import torch
from accelerate_state import fresh_accelerate_state  # noqa: F401
from lhspg_material import adamw as make_optimizer
from lhspg_material import drive, graph_of, lora_model, moments_zero, protected_graph, resumed_run, run_of
from tiny_models import VOCAB, single_thread, tiny_model  # noqa: F401

from lorashear.errors import LorashearError
from lorashear.graph.counting import ParamCounter
from lorashear.importance import ScoreContext, get_criterion
from lorashear.prune.api import tied_aliases
from lorashear.prune.loraprune import LorapruneConfig, LorapruneHook, cubic_ratio
from lorashear.train import LoopConfig, TrainRun, make_accelerator, train
from lorashear.train import lora_model as add_lora
from lorashear.train import make_optimizer as loop_optimizer
from lorashear.train.logs import read_jsonl

KINDS = ("kv_group", "mlp_channel")
RATIO, STEPS, EVERY = 0.25, 30, 5  # 0-based steps: none ≤ 3, masks every 5, the target from 27


def test_cubic_ratio_follows_its_definition():
    total, target = 100, 0.5
    start, span = 10.0, 80.0  # warm-up 10% of the steps, cool-down 10%
    for step in (0, 5, 10):
        assert cubic_ratio(step, total, target) == 0.0
    for step in (11, 30, 50, 77, 90):
        assert cubic_ratio(step, total, target) == pytest.approx(target * (1 - (1 - (step - start) / span) ** 3))
    assert cubic_ratio(50, total, target) == pytest.approx(0.4375)  # half way: 1 − ½³ of the target
    for step in (91, 99):
        assert cubic_ratio(step, total, target) == target
    ratios = [cubic_ratio(k, total, target) for k in range(total)]
    assert ratios == sorted(ratios)  # masks only grow
    assert cubic_ratio(4, 20, 0.3, warmup=0.25, cooldown=0.25) == 0.0
    assert cubic_ratio(10, 20, 0.3, warmup=0.25, cooldown=0.25) == pytest.approx(0.3 * (1 - 0.5**3))


@pytest.mark.parametrize("options, message", [
    ({"beta": 1.0}, "beta"), ({"warmup_share": 0.6, "cooldown_share": 0.4}, "sum must be below 1"),
    ({"mask_every": 0}, "mask period"), ({"criterion_options": {"gradients": "calibration"}}, "gradients"),
    ({"criterion_options": {"colour": 1}}, "no option colour"),
])
def test_config_refuses_bad_settings(options, message):
    with pytest.raises(LorashearError, match=message):
        LorapruneConfig(**options)


@pytest.fixture(scope="module")
def graph():
    return protected_graph(KINDS)


def new_hook(graph, model, **options) -> LorapruneHook:
    config = LorapruneConfig(**{"mask_every": EVERY, **options})
    return LorapruneHook(config, graph, RATIO, KINDS, aliases=tied_aliases(model))


def start(graph, **options):
    model = lora_model()  # seeds the global RNG: every run draws the same batches
    optimizer = make_optimizer(model)
    hook = new_hook(graph, model, **options)
    run = run_of(model, optimizer, STEPS)
    hook.on_start(run)
    return model, hook, run


class AverageCheck:
    """Stands in for the hook in `drive`: checks s ← β·s + (1 − β)·s_new against the criterion alone."""

    def __init__(self, hook: LorapruneHook, graph) -> None:
        self.hook, self.graph = hook, graph
        self.criterion = get_criterion("lora-grad", gradients="present")

    def before_step(self, run) -> None:
        self.hook.before_step(run)

    def before_optimizer_step(self, run) -> None:
        before = dict(self.hook.scores)
        ctx = ScoreContext(run.unwrapped, self.graph, aliases=self.hook.aliases, kinds=KINDS)
        new = self.criterion.score(ctx).scores
        self.hook.before_optimizer_step(run)
        beta = self.hook.config.beta
        assert self.hook.scores == pytest.approx({i: beta * before[i] + (1 - beta) * v for i, v in new.items()})

    def after_step(self, run, record) -> None:
        self.hook.after_step(run, record)



def test_masks_grow_on_schedule_never_revive_and_reach_the_target(graph):
    model, hook, run = start(graph)
    history: list[set[int]] = []
    ratios: list[float] = []

    def check(run):
        for i in hook.masked:  # masked: base and LoRA slices zero, Adam moments too
            assert hook.variables.is_zero(i) and moments_zero(run.optimizer, hook.variables, i)
        assert not history or history[-1] <= hook.masked  # cumulative
        history.append(set(hook.masked))
        ratios.append(hook.mask_ratio)

    records = drive(AverageCheck(hook, graph), run, STEPS, check)
    hook.on_end(run)
    chosen_at = [k for k in range(STEPS) if ratios[k] != (ratios[k - 1] if k else 0.0)]  # mask updates
    assert chosen_at == [5, 10, 15, 20, 25, 27]  # every EVERY steps after warm-up, and where the cubic meets the target
    assert ratios[-1] == RATIO and not history[4] and history[5]
    grew_at = [k for k in range(1, STEPS) if history[k] != history[k - 1]]
    assert set(grew_at) <= set(chosen_at)
    for k, record in enumerate(records):
        assert record["scheduled_ratio"] == pytest.approx(hook.scheduled_ratio(k))
        assert record["sparsity"] <= record["scheduled_ratio"] + 0.01
    masked = sorted(hook.masked)
    assert not any(graph.groups[i].unprunable for i in masked)
    counter = ParamCounter(graph, tied_aliases(model))
    counter.add([graph.groups[i] for i in masked])
    assert abs(counter.removed_params / counter.total - RATIO) < 0.01
    assert records[-1]["sparsity"] == pytest.approx(counter.removed_params / counter.total)
    assert sum(records[-1]["masked"].values()) == len(masked) and records[0]["masked"] == {}
    plan = hook.plan()
    assert plan.method == "loraprune" and plan.groups == [graph.groups[i] for i in masked]
    assert plan.achieved_ratio == pytest.approx(counter.removed_params / counter.total)
    assert plan.settings["criterion"]["criterion"] == "lora-grad" and plan.settings["beta"] == 0.9


def test_a_short_run_ends_at_the_target(graph):
    """Too few steps for the cool-down: on_end of a finished run masks up to the target all the same."""
    model = lora_model()
    hook = new_hook(graph, model, mask_every=100)
    run = run_of(model, make_optimizer(model), 5)
    hook.on_start(run)
    drive(hook, run, 5)
    assert hook.masked == set()
    hook.on_end(run)
    assert abs(hook.plan().achieved_ratio - RATIO) < 0.01
    assert all(hook.variables.is_zero(i) for i in hook.masked)


def test_resume_from_the_hook_state_gives_the_same_run(graph):
    hook_a, resumed = resumed_run(lambda: start(graph), lambda model: new_hook(graph, model), STEPS, 17)
    assert resumed.masked == hook_a.masked and resumed.masked  # cut between two mask updates
    assert resumed.scores == pytest.approx(hook_a.scores, rel=1e-5)


def test_an_unreachable_ratio_fails_before_training(graph):
    model = lora_model()
    hook = LorapruneHook(LorapruneConfig(), graph, 0.6, KINDS, aliases=tied_aliases(model))
    with pytest.raises(LorashearError, match="not reachable"):
        hook.check(STEPS)
    with pytest.raises(LorashearError, match="not reachable"):
        hook.on_start(run_of(model, make_optimizer(model), STEPS))
    with pytest.raises(LorashearError, match="at least one optimiser step"):
        new_hook(graph, model).check(0)


def test_on_the_shared_loop_the_step_log_and_the_plan(tmp_path):
    """The real loop (accumulated micro-batches, Accelerate's wrapped AdamW): masks are zero at the end and
    the step log carries the schedule and the masks."""
    config = LoopConfig(batch_size=2, grad_accum=2, lr=1e-2, lora_dropout=0.0, checkpoint_every=0, seq_len=10)
    model = add_lora(tiny_model("llama"), config.lora_r, config.lora_alpha, 0.0, config.lora_targets)
    hook = LorapruneHook(LorapruneConfig(mask_every=3), graph_of(model, KINDS), RATIO, KINDS,
                         aliases=tied_aliases(model))
    accelerator = make_accelerator(config)
    optimizer, scheduler = loop_optimizer(model, config, 12)
    prepared, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    run = TrainRun(prepared, optimizer, scheduler, accelerator, config, 12, tmp_path)
    generator = torch.Generator().manual_seed(0)

    def batches(run, rows):
        ids = torch.randint(0, VOCAB, (rows, config.seq_len), generator=generator)
        return ids, ids

    train(run, batches, lambda m, ids, labels: (m(input_ids=ids, labels=labels).loss, {}), [hook])
    assert all(hook.variables.is_zero(i) for i in hook.masked)
    assert abs(hook.plan().achieved_ratio - RATIO) < 0.01
    log = read_jsonl(tmp_path / "logs" / "steps.jsonl")
    assert [r["scheduled_ratio"] for r in log] == pytest.approx([hook.scheduled_ratio(k) for k in range(12)])
    assert log[0]["masked"] == {} and log[-1]["sparsity"] == pytest.approx(hook.plan().achieved_ratio)
