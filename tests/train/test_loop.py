"""The one training loop on a tiny llama: hook order and counts, accumulated gradients, stop and resume."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from tiny_models import VOCAB, tiny_model

from lorashear.train import LoopConfig, TrainHook, TrainRun, lora_run, make_accelerator, train
from lorashear.train.checkpoint import latest_checkpoint
from lorashear.train.loop import MAX_GRAD_NORM

SEQ = 12


class Batches(TrainHook):
    """A batch source whose random position is checkpointed state: a resumed run must see the same data."""

    def __init__(self) -> None:
        self.generator = torch.Generator().manual_seed(0)
        self.drawn: list[torch.Tensor] = []

    def __call__(self, run: TrainRun, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.randint(0, VOCAB, (rows, SEQ), generator=self.generator)
        self.drawn.append(ids)
        return ids, ids

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class Recorder(TrainHook):
    """Records every call; its list of finished steps is its checkpointed state."""

    def __init__(self, batches: Batches) -> None:
        self.batches, self.events, self.steps_done, self.grad_errors = batches, [], [], []
        self.loaded_at_start: list[int] | None = None

    def on_start(self, run: TrainRun) -> None:
        self.events.append("on_start")
        self.loaded_at_start = list(self.steps_done)

    def before_step(self, run: TrainRun) -> None:
        self.events.append("before_step")
        self.batches.drawn.clear()

    def before_optimizer_step(self, run: TrainRun) -> None:
        self.events.append(f"before_optimizer_step:{len(self.batches.drawn)}")
        self.grad_errors.append(_gradient_error(run, self.batches.drawn))

    def after_step(self, run: TrainRun, record: dict) -> None:
        self.events.append("after_step")
        self.steps_done.append(run.step)
        adam_steps = {int(s["step"]) for s in run.optimizer.optimizer.state.values()}
        record["adam_steps"] = sorted(adam_steps)  # a hook's key lands in the step log

    def on_end(self, run: TrainRun) -> None:
        self.events.append("on_end")

    def state_dict(self) -> dict:
        return {"steps_done": list(self.steps_done)}

    def load_state_dict(self, state: dict) -> None:
        self.steps_done = list(state["steps_done"])


def _loss(model, ids, labels):
    loss = model(input_ids=ids, labels=labels).loss
    return loss, {"lm_loss": float(loss.detach())}


def _gradient_error(run: TrainRun, micro_batches: list[torch.Tensor]) -> float:
    """Largest difference between p.grad and the clipped mean gradient of the step's micro-batches, recomputed."""
    model = run.unwrapped
    twin = copy.deepcopy(model)
    twin.zero_grad(set_to_none=True)
    for ids in micro_batches:
        (twin(input_ids=ids, labels=ids).loss / len(micro_batches)).backward()
    trainable = [(p, q) for p, q in zip(model.parameters(), twin.parameters(), strict=True) if p.requires_grad]
    torch.nn.utils.clip_grad_norm_([q for _, q in trainable], MAX_GRAD_NORM)
    return max(float((p.grad - q.grad).abs().max()) for p, q in trainable)


class FrozenGradients(TrainHook):
    """Takes gradients of the frozen weights on every step for its own use (as LHSPG's saliency window does)."""

    def __init__(self) -> None:
        self.params: list[torch.nn.Parameter] = []
        self.norms: list[float] = []

    def on_start(self, run: TrainRun) -> None:
        self.params = [p for p in run.unwrapped.parameters() if not p.requires_grad]

    def before_step(self, run: TrainRun) -> None:
        for p in self.params:
            p.requires_grad_(True)

    def before_optimizer_step(self, run: TrainRun) -> None:
        self.norms.append(float(torch.stack([p.grad.norm() for p in self.params if p.grad is not None]).norm()))
        for p in self.params:
            p.grad = None
            p.requires_grad_(False)


def _run(work, total_steps=4, extra_hooks=(), **options) -> tuple[TrainRun, Recorder]:
    config = LoopConfig(**{"batch_size": 2, "grad_accum": 3, "lr": 1e-2, "lora_dropout": 0.0, "checkpoint_every": 0,
                           "seq_len": SEQ, **options})
    batches = Batches()
    recorder = Recorder(batches)
    run = train(lora_run(tiny_model("llama"), config, make_accelerator(config), work, total_steps), batches, _loss,
                [batches, *extra_hooks, recorder], desc="test", postfix=lambda r: {"adam": r["adam_steps"]})
    return run, recorder


def _lora_weights(run: TrainRun) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in run.unwrapped.state_dict().items() if "lora_" in k}


def _log(work) -> list[dict]:
    return [json.loads(line) for line in (work / "logs" / "steps.jsonl").read_text().splitlines()]


def test_hooks_run_in_order_once_per_step_with_the_accumulated_gradients(tmp_path):
    run, recorder = _run(tmp_path / "run")
    step = ["before_step", "before_optimizer_step:3", "after_step"]  # all three micro-batches drawn first
    assert recorder.events == ["on_start", *step * 4, "on_end"]
    assert run.finished and run.step == 4 and run.tokens_seen == 4 * 3 * 2 * SEQ
    assert max(recorder.grad_errors) < 1e-6  # the whole step's mean gradient, clipped, once
    log = _log(tmp_path / "run")
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert [r["adam_steps"] for r in log] == [[1], [2], [3], [4]]  # one optimiser step per step
    assert all({"loss", "lm_loss", "lr", "tokens_seen", "tokens_per_s"} <= set(r) for r in log)


def test_clipping_counts_only_the_trained_parameters(tmp_path):
    """A hook's gradients of frozen weights (far above the clip norm) leave the trained gradients alone."""
    frozen = FrozenGradients()
    run, recorder = _run(tmp_path / "run", extra_hooks=[frozen])
    assert len(frozen.norms) == 4 and min(frozen.norms) > MAX_GRAD_NORM
    assert max(recorder.grad_errors) < 1e-6


def test_stop_and_resume_restore_hooks_and_match_an_uninterrupted_run(tmp_path):
    whole, _ = _run(tmp_path / "whole")
    first, recorder = _run(tmp_path / "cut", stop_after_steps=2)
    assert not first.finished and first.step == 2 and "on_end" not in recorder.events
    assert latest_checkpoint(tmp_path / "cut").name == "step-00000002"
    resumed, recorder = _run(tmp_path / "cut", resume=True)
    assert recorder.loaded_at_start == [1, 2]  # the hook's state came back before on_start
    assert recorder.steps_done == [1, 2, 3, 4] and recorder.events.count("after_step") == 2
    assert resumed.finished and resumed.step == 4 and resumed.tokens_seen == whole.tokens_seen
    assert [r["loss"] for r in _log(tmp_path / "cut")] == pytest.approx([r["loss"] for r in _log(tmp_path / "whole")])
    a, b = _lora_weights(whole), _lora_weights(resumed)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    untrained = _lora_weights(_run(tmp_path / "none", total_steps=0)[0])
    assert any(not torch.allclose(a[k], untrained[k]) for k in a)  # the runs did train


def test_a_periodic_checkpoint_is_pruned_to_the_newest(tmp_path):
    run, _ = _run(tmp_path / "run", total_steps=5, checkpoint_every=2, keep_checkpoints=1)
    assert run.finished
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-00000004"]
