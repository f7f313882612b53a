"""The hook interface of the one training loop: a method's work (mixture update, projection, scoring) as a TrainHook."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lorashear.train.loop import TrainRun


class TrainHook:
    """A method's work inside the one training loop; override what you need (all default to no-ops)."""

    def on_start(self, run: TrainRun) -> None:
        """After model/optimizer/scheduler are prepared and a checkpoint (if any) is loaded, before the first step."""

    def before_step(self, run: TrainRun) -> None:
        """Before the micro-batches of each optimiser step (recovery: update the data mixture here)."""

    def before_optimizer_step(self, run: TrainRun) -> None:
        """Gradients of the whole (accumulated, synchronised) step are in p.grad; called once per optimiser
        step right before optimizer.step() (LoRAPrune reads LoRA gradients here)."""

    def after_step(self, run: TrainRun, record: dict) -> None:
        """After optimizer.step() and scheduler.step() of each optimiser step (run.step already counts it);
        may edit weights/LoRA/optimizer state (LHSPG projection) and add keys to `record` (the step log line)."""

    def on_end(self, run: TrainRun) -> None:
        """After the last step, before the model is saved/merged."""

    def state_dict(self) -> dict:  # checkpointed with the run (Accelerate register_for_checkpointing)
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def sharded_state_dict(self, run: TrainRun) -> dict:
        """State that is sharded across processes (FSDP DTensors), checkpointed with the model's shards by
        torch.distributed.checkpoint. On resume it is called again after `load_state_dict`, to give the tensors
        (right shapes and sharding) that the checkpoint is read into, then `load_sharded_state_dict` gets them."""
        return {}

    def load_sharded_state_dict(self, state: dict) -> None:
        pass
