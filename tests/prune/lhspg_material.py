"""Shared pieces of the LHSPG and LoRAPrune hook tests: a tiny peft LoRA model, its graph, groups by kind, a mini AdamW loop."""

from __future__ import annotations

import io
from types import SimpleNamespace

import torch
from tiny_models import tiny_model

from lorashear.graph import build_graph

KINDS = ("kv_group", "mlp_channel", "hidden_channel")
BATCHES = torch.randint(0, 128, (4, 2, 10), generator=torch.Generator().manual_seed(1))


def lora_model(model_type: str = "llama", seed: int = 0):
    model = tiny_model(model_type, lora=True, seed=seed)
    for p in model.parameters():
        if p.requires_grad:
            p.data *= 0.5  # keep the random LoRA update small next to W
    return model


def graph_of(model, kinds=KINDS):
    return build_graph(model, kinds)


def protected_graph(kinds=KINDS):
    """The tiny llama's graph with layer 0's MLP channels unprunable (as a knowledge analysis may mark them)."""
    g = graph_of(lora_model(), kinds)
    for group in g.groups:
        if group.kind == "mlp_channel" and group.layer == 0:
            group.unprunable = "test: protected"
    return g


def moments_zero(optimizer, variables, i) -> bool:
    """Group i's LoRA slices' Adam moments are zero (or absent: a merge restarts Adam)."""
    return all(not optimizer.state[p][key][ix].any() for p, ix in variables.lora_slices(i)
               for key in ("exp_avg", "exp_avg_sq") if key in optimizer.state[p])


def group(graph, kind: str, layer: int | None = 1, n: int = 0) -> int:
    return [i for i, g in enumerate(graph.groups) if g.kind == kind and (layer is None or g.layer == layer)][n]


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=BATCHES[0]).logits


def adamw(model) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.01)


def train_step(model, optimizer, before_optimizer_step=None) -> None:
    batch = BATCHES[torch.randint(0, len(BATCHES), (1,)).item()]
    model.train()
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    if before_optimizer_step is not None:  # where the shared loop calls its hooks' before_optimizer_step
        before_optimizer_step()
    optimizer.step()
    optimizer.zero_grad()
    model.eval()


def run_of(model, optimizer, total_steps: int) -> SimpleNamespace:
    """What the hook reads of the shared loop's TrainRun (one process, no fp16 loss scaling)."""
    return SimpleNamespace(model=model, unwrapped=model, optimizer=optimizer, step=0, total_steps=total_steps,
                           accelerator=SimpleNamespace(num_processes=1, scaler=None))


def drive(hook, run, steps: int, each=None) -> list[dict]:
    """Run `steps` optimiser steps of the mini loop with `hook` (its before_step, before_optimizer_step and
    after_step, as the shared loop calls them); `each(run)` after every step."""
    records = []
    for _ in range(steps):
        hook.before_step(run)
        train_step(run.unwrapped, run.optimizer, lambda: hook.before_optimizer_step(run))
        run.step += 1
        record = {"step": run.step}
        hook.after_step(run, record)
        records.append(record)
        if each is not None:
            each(run)
    return records


def assert_same_state(a, b) -> None:
    """Equal hook states (tensors compared exactly)."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same_state(a[k], b[k])
    else:
        assert a == b


def resumed_run(start, new_hook, steps: int, cut: int):
    """An uninterrupted run of `steps` and one stopped after `cut`, continued by a fresh hook loaded from the
    first's state (saved and loaded as Accelerate does); the models must end identical. Returns (uninterrupted hook, resumed hook).
    `start()` gives (model, hook, run) with the hook started; `new_hook(model)` a fresh hook."""
    model_a, hook_a, run_a = start()
    drive(hook_a, run_a, steps)
    model_b, hook_b, run_b = start()
    drive(hook_b, run_b, cut)
    buffer = io.BytesIO()
    torch.save(hook_b.state_dict(), buffer)
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    resumed = new_hook(model_b)
    resumed.load_state_dict(state)
    assert_same_state(resumed.state_dict(), state)
    resumed.on_start(run_b)
    drive(resumed, run_b, steps - cut)
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    return hook_a, resumed
