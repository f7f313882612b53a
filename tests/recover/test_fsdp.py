"""Recovery fully sharded (FSDP2) across two CPU processes equals one process, holds less per process, and resumes.

configs/accelerate/fsdp_cpu_2proc.yaml starts two gloo processes and asks for FSDP; lorashear shards the models
itself (lorashear.train.sharding). One process with batch 2 sees what two with batch 1 see; without dropout
(its masks are drawn per process) the two runs differ only by float summation order.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from launch import run_lorashear
from recover_material import make_llama
from safetensors.torch import load_file
from transformers import AutoTokenizer

TOLERANCE = 2e-3  # the bar for "the same weights"


@pytest.fixture(scope="module")
def mid_model(material, tmp_path_factory) -> str:
    """A LLaMA of ~50M parameters (200 MB in float32): big enough that weights, not the interpreter, set the peak."""
    tokenizer = AutoTokenizer.from_pretrained(material["dense"])
    folder = tmp_path_factory.mktemp("fsdp") / "mid"
    return str(make_llama(folder, tokenizer, intermediate=1536, seed=2, hidden=512, layers=16, heads=8))


def _recover(material, model: str, out: Path, processes: int, *extra: str):
    """`lorashear recover` of `model` (as pruned and dense) on 256 tokens: 4 steps of 2 x 32 tokens, one process with
    batch 2 or two FSDP processes with batch 1 each."""
    config = out.parent / "no-dropout.yaml"
    config.write_text("lora_dropout: 0.0\n")
    return run_lorashear(["recover", model, "-o", str(out), "--dense", model, "--data", *material["data"],
                          "--instruct", *material["instruct"], "--tokens", "256", "--seq-len", "32", "--grad-accum",
                          "1", "--mix-interval", "2", "--checkpoint-every", "2", "--lr", "2e-3", "--config",
                          str(config), "--batch-size", str(2 // processes), *extra], processes)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    weights = {}
    for file in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(file))
    return weights


def _assert_same(a: Path, b: Path) -> float:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    assert all(wa[k].shape == wb[k].shape for k in wa)
    worst = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    assert worst <= TOLERANCE, worst
    return worst


@pytest.fixture(scope="module")
def runs(material, mid_model, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("fsdp-runs")
    _recover(material, mid_model, root / "one", 1)
    two = _recover(material, mid_model, root / "two", 2)
    return {"one": root / "one", "two": root / "two", "root": root, "two_stdout": two.stdout}


def test_two_sharded_processes_train_what_one_process_does(runs):
    worst = _assert_same(runs["one"], runs["two"])
    one, two = (json.loads((runs[k] / "recovery.json").read_text()) for k in ("one", "two"))
    assert (one["sharded"], two["sharded"], two["num_processes"]) == (False, True, 2)
    assert two["parameters"] == one["parameters"] and two["steps"] == one["steps"] == 4
    assert runs["two_stdout"].count("recovered model written to") == 1  # one process reports
    print(f"largest weight difference, 1 process vs 2 sharded: {worst:.2e}")


def test_each_sharded_process_peaks_below_one_process(runs):
    (single,) = json.loads((runs["one"] / "recovery.json").read_text())["peak_memory_bytes"]
    ranks = json.loads((runs["two"] / "recovery.json").read_text())["peak_memory_bytes"]
    print(f"peak resident memory: one process {single / 2**20:.0f} MiB; sharded processes "
          + ", ".join(f"{r / 2**20:.0f} MiB" for r in ranks))
    assert len(ranks) == 2 and all(r < single for r in ranks)


def test_a_stopped_sharded_run_resumes_to_the_same_result(material, mid_model, runs):
    out = runs["root"] / "resumed"
    stopped = _recover(material, mid_model, out, 2, "--stop-after-steps", "2")
    assert "continue with --resume" in stopped.stdout + stopped.stderr and not out.exists()
    _recover(material, mid_model, out, 2, "--resume")
    _assert_same(runs["two"], out)
