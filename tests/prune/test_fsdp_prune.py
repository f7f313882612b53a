"""LoRAPrune and LHSPG fully sharded (FSDP2) across two CPU processes equal one process, and resume.

configs/accelerate/fsdp_cpu_2proc.yaml starts two gloo processes and asks for FSDP: the pruning context holds the
model's skeleton only, each process loads its rows of the weights, scores and edits them where it holds them
(sums added across processes), the merged weights are written a tensor at a time and compress/export read them.
One process with batch 2 sees what two with batch 1 see; without LoRA dropout only float summation order differs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from launch import run_lorashear
from safetensors.torch import load_file
from tiny_models import tiny_model

from lorashear.errors import LorashearError
from lorashear.prune.api import PruneConfig, prune_model

TOLERANCE = 2e-3
TINY = ["--ratio", "0.2", "--unprunable", "fixed", "--tokens", "256", "--seq-len", "32", "--grad-accum", "1",
        "--warmup-share", "0.25", "--data", "tiny-stories,c4", "--calib-samples", "4", "--lora-dropout", "0"]
METHOD_FLAGS = {"loraprune": ["--cooldown-share", "0.25", "--mask-every", "2"],
                "lhspg": ["--periods", "2", "--saliency-steps", "2"]}


def _prune(model, out: Path, method: str, processes: int, *extra: str):
    return run_lorashear(["prune", str(model), "--method", method, "-o", str(out), *TINY, *METHOD_FLAGS[method],
                          "--batch-size", str(2 // processes), *extra], processes)


def _assert_same(a: Path, b: Path) -> float:
    wa, wb = ({k: v for f in sorted(d.glob("*.safetensors")) for k, v in load_file(f).items()} for d in (a, b))
    assert wa.keys() == wb.keys() and all(wa[k].shape == wb[k].shape for k in wa)
    worst = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    assert worst <= TOLERANCE, worst
    ra, rb = (json.loads((d / "pruning.json").read_text()) for d in (a, b))
    assert ra["removed"] == rb["removed"] and ra["achieved_ratio"] == rb["achieved_ratio"]
    return worst


@pytest.mark.parametrize("method", ["loraprune", "lhspg"])
def test_two_sharded_processes_prune_what_one_process_does(small_vocab_dirs, tmp_path, method):
    model = small_vocab_dirs["llama"]
    _prune(model, tmp_path / "one", method, 1)
    _prune(model, tmp_path / "two", method, 2)
    worst = _assert_same(tmp_path / "one", tmp_path / "two")
    record = json.loads((tmp_path / "two" / "pruning.json").read_text())
    training = record["settings"]["training"]
    assert training["num_processes"] == 2 and training["sharded"] and len(training["peak_memory_bytes"]) == 2
    assert not list(tmp_path.glob(".two*"))  # the run folder (merged shards, checkpoints) is gone
    print(f"{method}: largest weight difference, 1 process vs 2 sharded: {worst:.2e}")


def _whole_run_peak(stdout: str) -> int:
    """The main process's peak host memory over the whole run (training, merge, compress, export), in MiB."""
    match = re.search(r"peak host memory of this process \(the whole run\): ([\d,]+) MiB", stdout)
    assert match, stdout[-2000:]
    return int(match.group(1).replace(",", ""))


@pytest.mark.parametrize("method", ["loraprune", "lhspg"])
def test_each_sharded_process_peaks_below_one_process(small_tokenizer, tmp_path, method):
    """A LLaMA of ~50M parameters (200 MB in float32), big enough that weights, not the interpreter, set the peak:
    each sharded process trains below one process, and the main process's export (compress streamed from the merged
    shards, a tensor at a time) keeps its whole run below one process's too."""
    model = tmp_path / "mid"
    tiny_model("llama", vocab_size=len(small_tokenizer) + 20, hidden_size=512, intermediate_size=1536,
               num_hidden_layers=16, num_attention_heads=8, num_key_value_heads=4, head_dim=64,
               max_position_embeddings=512).save_pretrained(model)
    small_tokenizer.save_pretrained(model)
    one = _prune(model, tmp_path / "one", method, 1)
    two = _prune(model, tmp_path / "two", method, 2)
    _assert_same(tmp_path / "one", tmp_path / "two")
    (single,) = json.loads((tmp_path / "one" / "pruning.json").read_text())["settings"]["training"]["peak_memory_bytes"]
    ranks = json.loads((tmp_path / "two" / "pruning.json").read_text())["settings"]["training"]["peak_memory_bytes"]
    whole_one, whole_two = _whole_run_peak(one.stdout), _whole_run_peak(two.stdout)
    print(f"{method}: peak resident memory while training: one process {single / 2**20:.0f} MiB; sharded processes "
          + ", ".join(f"{r / 2**20:.0f} MiB" for r in ranks)
          + f". Whole run of the main process: one {whole_one} MiB, sharded {whole_two} MiB")
    assert len(ranks) == 2 and all(r < single for r in ranks)
    assert whole_two < whole_one


def test_a_stopped_sharded_lhspg_run_resumes_to_the_same_result(small_vocab_dirs, tmp_path):
    """Stopped inside a saliency window: its gradient shards are checkpointed with the model's and read back."""
    model = small_vocab_dirs["llama"]
    _prune(model, tmp_path / "whole", "lhspg", 2)
    stopped = _prune(model, tmp_path / "resumed", "lhspg", 2, "--stop-after-steps", "1")
    assert "continue with --resume" in stopped.stdout + stopped.stderr
    assert not (tmp_path / "resumed").exists()
    _prune(model, tmp_path / "resumed", "lhspg", 2, "--resume")
    _assert_same(tmp_path / "whole", tmp_path / "resumed")


@pytest.fixture
def fsdp_launch(monkeypatch):
    """The environment `accelerate launch` gives two FSDP processes (nothing is started)."""
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")


def test_fsdp_refuses_one_shot_methods_and_probing_analyses(small_vocab_dirs, tmp_path, fsdp_launch):
    model = str(small_vocab_dirs["llama"])
    with pytest.raises(LorashearError, match="only the trained methods"):
        prune_model(PruneConfig(model, str(tmp_path / "a"), method="magnitude"))
    with pytest.raises(LorashearError, match="--knowledge-from"):
        prune_model(PruneConfig(model, str(tmp_path / "b"), method="loraprune"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
