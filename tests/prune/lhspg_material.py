"""Shared pieces of the LHSPG tests: a tiny peft LoRA model, its graph, groups by kind, a mini AdamW loop."""

from __future__ import annotations

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


def group(graph, kind: str, layer: int | None = 1, n: int = 0) -> int:
    return [i for i, g in enumerate(graph.groups) if g.kind == kind and (layer is None or g.layer == layer)][n]


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=BATCHES[0]).logits


def adamw(model) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.01)


def train_step(model, optimizer) -> None:
    batch = BATCHES[torch.randint(0, len(BATCHES), (1,)).item()]
    model.train()
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    model.eval()


def run_of(model, optimizer, total_steps: int) -> SimpleNamespace:
    """What the hook reads of the shared loop's TrainRun."""
    return SimpleNamespace(model=model, unwrapped=model, optimizer=optimizer, step=0, total_steps=total_steps)


def drive(hook, run, steps: int, each=None) -> list[dict]:
    """Run `steps` optimiser steps of the mini loop with `hook`; `each(run)` after every step."""
    records = []
    for _ in range(steps):
        train_step(run.unwrapped, run.optimizer)
        run.step += 1
        record = {"step": run.step}
        hook.after_step(run, record)
        records.append(record)
        if each is not None:
            each(run)
    return records
