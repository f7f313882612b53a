"""Recovery's data as a hook of the training loop: stages of categories, sampled by a per-stage dynamic mixture.

`StagedMixture` is both the loop's batch source (the current step's stage draws the next global
batch by its mixture's weights) and its hook (every `mix_interval` steps of a stage it measures
each category's held-out loss and updates the weights; it names the stage in the step log). Its
streams' positions and mixtures are its checkpointed state.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator

from lorashear.recover.config import RecoverConfig
from lorashear.recover.losses import lm_loss_sum
from lorashear.recover.mixture import DynamicMixture
from lorashear.recover.streams import Category, MixedStream, shard_rows
from lorashear.train import TrainHook, TrainRun, sharding

PRETRAIN, INSTRUCT = "pretrain", "instruct"


@dataclass
class RecoveryStage:
    """One stage: its categories' stream, their mixture, the dense reference losses, its steps [start, end)."""

    name: str
    stream: MixedStream
    mixture: DynamicMixture
    reference: dict[str, float]
    start: int
    end: int


def make_stage(name: str, categories: list[Category], start: int, end: int, config: RecoverConfig) -> RecoveryStage:
    names = [c.name for c in categories]
    mixture = DynamicMixture(names, eta=config.mix_eta, smoothing=config.mix_smoothing, dynamic=config.mix == "dynamic")
    return RecoveryStage(name, MixedStream(categories, seed=config.seed + start), mixture, {}, start, end)


class StagedMixture(TrainHook):
    """The stages' batches for the loop (`next_batch`) and their mixture updates (`before_step`)."""

    def __init__(self, stages: list[RecoveryStage], config: RecoverConfig, work: Path) -> None:
        self.stages, self.config, self.work = stages, config, work

    def stage_at(self, step: int) -> RecoveryStage:
        return next(s for s in self.stages if s.start <= step < s.end)

    def next_batch(self, run: TrainRun, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        stage = self.stage_at(run.step)
        ids, labels, _picks = stage.stream.next_batch(stage.mixture.weights, rows)
        return ids, labels

    def before_step(self, run: TrainRun) -> None:
        stage = self.stage_at(run.step)
        if (run.step - stage.start) % self.config.mix_interval == 0:
            losses = category_losses(run.model, stage.stream.categories, self.config, run.accelerator)
            stage.mixture.update(losses, stage.reference or losses, step=run.step)
            if run.accelerator.is_main_process:
                self.write_log()

    def after_step(self, run: TrainRun, record: dict) -> None:
        record["stage"] = self.stage_at(run.step - 1).name

    def write_log(self) -> None:
        """logs/mixture.json: every stage's mixture records so far."""
        (self.work / "logs").mkdir(parents=True, exist_ok=True)
        (self.work / "logs" / "mixture.json").write_text(json.dumps(self.histories(), indent=2))

    def histories(self) -> dict[str, list[dict]]:
        return {s.name: s.mixture.history for s in self.stages}

    def state_dict(self) -> dict:
        return {
            "streams": {s.name: s.stream.state_dict() for s in self.stages},
            "mixtures": {s.name: s.mixture.state_dict() for s in self.stages},
        }

    def load_state_dict(self, state: dict) -> None:
        for s in self.stages:
            s.stream.load_state_dict(state["streams"][s.name])
            s.mixture.load_state_dict(state["mixtures"][s.name])


@torch.no_grad()
def category_losses(model, categories: list[Category], config: RecoverConfig, accelerator: Accelerator) -> dict[str, float]:
    """Mean next-token loss of each category's held-out blocks; the blocks are split across processes."""
    was_training = model.training
    model.eval()
    device = accelerator.device
    losses = {}
    world = accelerator.num_processes
    for cat in categories:
        held = min(config.eval_sequences, len(cat.held_input_ids))
        ids = shard_rows(cat.held_input_ids[:held], accelerator.process_index, world)
        labels = shard_rows(cat.held_labels[:held], accelerator.process_index, world)
        total = torch.zeros(2, dtype=torch.float64, device=device)
        # Every process runs as many forwards (a sharded model's forward is collective): one that has no rows
        # left runs the category's first block again and does not count it.
        rows = math.ceil(held / world) if sharding.is_sharded(model) else len(ids)
        for i in range(0, rows, config.batch_size):
            block, block_labels, counted = ids[i : i + config.batch_size], labels[i : i + config.batch_size], True
            if not len(block):
                block, block_labels, counted = cat.held_input_ids[:1], cat.held_labels[:1], False
            with accelerator.autocast():
                logits = model(input_ids=block.to(device)).logits
            if counted:
                loss_sum, count = lm_loss_sum(logits, block_labels.to(device))
                total += torch.stack([loss_sum.double(), count.double()])
        total = accelerator.reduce(total, reduction="sum")
        losses[cat.name] = float(total[0] / total[1].clamp(min=1))
    model.train(was_training)
    return losses


def reference_losses(stages: list[RecoveryStage], dense, work: Path, config: RecoverConfig, accelerator: Accelerator) -> None:
    """The dense model's held-out loss per category, measured once and cached in the run folder."""
    cache = work / "reference_losses.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        for s in stages:
            s.reference = cached.get(s.name, {})
        if all(s.reference for s in stages):
            return
    if dense is None:
        return  # uniform mix without a dense model: no reference, excess losses are logged as 0
    for s in stages:
        s.reference = category_losses(dense, s.stream.categories, config, accelerator)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        cache.write_text(json.dumps({s.name: s.reference for s in stages}, indent=2))
