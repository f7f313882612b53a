import json

import pytest
import torch
from recover_material import tiny_config
from safetensors.torch import load_file

from lorashear.models import load_model
from lorashear.recover import recover
from lorashear.recover.checkpoint import partial_dir

RUN = {"kd_weight": 0.5, "tokens": 384}  # 6 steps of 2 x 32 tokens: 3 per stage, mixture updates every 2


@pytest.fixture(scope="module")
def whole(material, tmp_path_factory):
    """One uninterrupted run, shared by the output test and the resume test."""
    return recover(tiny_config(material, tmp_path_factory.mktemp("whole") / "recovered", **RUN))


def test_run_writes_a_loadable_merged_model_and_logs(material, whole):
    result, out = whole, whole.out
    assert result.finished and result.out == out and result.steps == 6 and result.tokens_seen == 384
    assert not partial_dir(out).exists()
    model = load_model(str(out), device="cpu")
    assert model.config.intermediate_size == 48  # the pruned shapes, LoRA merged away
    assert not any("lora" in name for name, _ in model.named_parameters())
    pruned = load_model(material["pruned"], device="cpu")
    changed = any(not torch.equal(a, b) for a, b in zip(model.parameters(), pruned.parameters(), strict=True))
    assert changed
    steps = [json.loads(line) for line in (out / "logs" / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps] == list(range(1, 7))
    assert {r["stage"] for r in steps[:3]} == {"pretrain"} and {r["stage"] for r in steps[3:]} == {"instruct"}
    assert all("kd_loss" in r for r in steps)
    mixture = json.loads((out / "logs" / "mixture.json").read_text())
    assert [r["step"] for r in mixture["pretrain"]] == [0, 2]
    assert [r["step"] for r in mixture["instruct"]] == [3, 5]
    for records in mixture.values():
        assert all(sum(r["weights"].values()) == pytest.approx(1.0) for r in records)
    summary = json.loads((out / "recovery.json").read_text())
    assert summary["tokens_seen"] == 384 and summary["num_processes"] == 1
    assert {p.name for p in (out / "plots").iterdir()} == {"loss.png", "mixture_pretrain.png", "mixture_instruct.png"}
    assert (out / "recover_config.yaml").is_file() and not (out / "checkpoints").exists()


def test_resumed_run_matches_an_uninterrupted_one(material, whole, tmp_path):
    # Stop in stage 1 after a checkpoint, before a mixture update; the folder must not look finished.
    cut = tiny_config(material, tmp_path / "cut", stop_after_steps=2, **RUN)
    first = recover(cut)
    assert not first.finished and not (tmp_path / "cut").exists() and partial_dir(tmp_path / "cut").is_dir()
    # the checkpoint holds the trainable state (LoRA) only: the frozen base comes from the pruned folder again
    (saved,) = partial_dir(tmp_path / "cut").glob("checkpoints/step-*/model.safetensors")
    assert load_file(saved) and all(".lora_" in name for name in load_file(saved))
    cut.stop_after_steps, cut.resume = None, True
    resumed = recover(cut)
    assert resumed.finished and resumed.tokens_seen == whole.tokens_seen and resumed.steps == whole.steps

    def losses(out):
        return [json.loads(line)["loss"] for line in (out / "logs" / "steps.jsonl").read_text().splitlines()]

    assert losses(whole.out) == pytest.approx(losses(resumed.out), abs=1e-6)
    assert len(losses(resumed.out)) == 6
    a, b = load_file(whole.out / "model.safetensors"), load_file(resumed.out / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    mix_a = json.loads((whole.out / "logs" / "mixture.json").read_text())
    mix_b = json.loads((resumed.out / "logs" / "mixture.json").read_text())
    assert mix_a == mix_b  # exact: same losses, same weights
