"""`lorashear prune --method lhspg` end to end on tiny real architectures: training with the LHSPG hook,
merge, compress, export; resume; recipes; bad input; two DDP processes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate_state import fresh_accelerate_state  # noqa: F401
from tiny_models import single_thread  # noqa: F401
from trained_material import check_bad_input, check_export, check_resume

from lorashear.cli import main
from lorashear.errors import LorashearError
from lorashear.prune import METHODS
from lorashear.prune.lhspg import LhspgConfig, LhspgHook
from lorashear.train.config import read_recipe

ROOT = Path(__file__).resolve().parents[2]
# 8 optimiser steps of one 32-token sequence: 2 warm-up steps, 2 periods of 3 steps.
TINY = ["--tokens", "256", "--seq-len", "32", "--batch-size", "1", "--grad-accum", "1", "--warmup-share", "0.25",
        "--periods", "2", "--data", "tiny-stories,c4", "--calib-samples", "4", "--knowledge-samples", "2"]


def prune_argv(source, out, *extra) -> list[str]:
    return ["prune", str(source), "--method", "lhspg", "--ratio", "0.2", "-o", str(out), "--unprunable", "fixed",
            *TINY, *extra]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_lhspg_end_to_end(small_vocab_dirs, tmp_path, merged_models, arch):
    out = tmp_path / "out"
    assert main(prune_argv(small_vocab_dirs[arch], out)) == 0
    record, removed, steps = check_export(out, merged_models, steps=8, tokens=256)
    assert record["method"] == "lhspg"
    settings = record["settings"]
    assert settings["schedule"] == {"total_steps": 8, "warmup_steps": 2, "period_steps": 3, "periods": 2}
    assert settings["saliency"]["criterion"] == "taylor"
    assert {g.layer for g in removed} <= {1, 2}  # the fixed rule keeps layers 0 and 3 of 4 whole
    assert record["knowledge"]["rule"] == "fixed"
    assert steps[1]["sparsity"] == 0 and sum(steps[-1]["zeroed"].values()) == len(removed)


def test_saliency_samples_scores_the_first_n_calibration_samples(small_vocab_dirs, tmp_path, monkeypatch):
    """--saliency-samples N: the period starts' data-driven saliency reads the first N of the calibration samples."""
    from lorashear.prune.lhspg.hook import LhspgHook

    seen = []
    original = LhspgHook.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.batches)

    monkeypatch.setattr(LhspgHook, "__init__", spy)
    out = tmp_path / "out"
    assert main(prune_argv(small_vocab_dirs["llama"], out, "--saliency-samples", "2")) == 0
    assert [tuple(b.shape) for b in seen] == [(2, 32)]  # of the 4 calibration samples of 32 tokens
    assert json.loads((out / "pruning.json").read_text())["settings"]["lhspg"]["saliency_samples"] == 2


@pytest.mark.parametrize("extra", [[], ["--saliency-steps", "2"]], ids=["calibration", "saliency-steps"])
def test_resume_after_an_interrupted_run_gives_the_same_plan(small_vocab_dirs, tmp_path, capsys, extra):
    """With --saliency-steps 2 the cut (after step 4 of 8; choices after steps 2 and 4) falls inside a window."""
    check_resume(lambda *a: prune_argv(*a, *extra), small_vocab_dirs["llama"], tmp_path, capsys)


def test_saliency_steps_score_from_training_not_calibration(small_vocab_dirs, tmp_path, monkeypatch):
    """--saliency-steps N: the saliency gets no calibration batches (the analysis still probes with its own)."""
    batches, reads = [], []
    init, window_gradients = LhspgHook.__init__, LhspgHook._window_gradients

    def spy_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        batches.append(self.batches)

    def spy_read(self, run):
        grads = window_gradients(self, run)
        reads.append(sorted(grads))
        return grads

    monkeypatch.setattr(LhspgHook, "__init__", spy_init)
    monkeypatch.setattr(LhspgHook, "_window_gradients", spy_read)
    out = tmp_path / "out"
    assert main(prune_argv(small_vocab_dirs["llama"], out, "--saliency-steps", "2")) == 0
    assert batches == [None] and len(reads) == 2 and all(reads)  # two choices (periods), each read gradients
    assert json.loads((out / "pruning.json").read_text())["settings"]["lhspg"]["saliency_steps"] == 2


@pytest.mark.parametrize("extra, match", [
    (["--tokens", "10000000"], "more than the training data holds"),
    (["--ratio", "0.6"], "not reachable"),
    (["--saliency", "nonsense"], "unknown criterion"),
    (["--score-option", "colour=red"], "has no option colour"),
    (["--periods", "0"], "periods must be a positive integer"),
    (["--saliency-samples", "0"], "--saliency-samples must be a positive integer"),
    (["--saliency-steps", "0"], "--saliency-steps must be a positive integer"),
    (["--saliency-steps", "2", "--saliency", "lhspg"], "needs a saliency that reads weight gradients"),
    (["--tokens", "32"], "at least one step per period"),
    (["--lambda-rule", "cubic"], None),  # argparse refuses it (exit 2 too)
])
def test_bad_input_is_one_clear_error_and_no_folder(small_vocab_dirs, tmp_path, capsys, extra, match):
    check_bad_input(prune_argv(small_vocab_dirs["llama"], tmp_path / "out"), extra, match, capsys)


def test_training_flags_are_refused_for_one_shot_methods(small_vocab_dirs, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["prune", str(small_vocab_dirs["llama"]), "--method", "magnitude", "--ratio", "0.2", "-o", str(out)]
    assert main([*argv, "--tokens", "1000"]) == 2
    assert "--tokens: training options apply to trained methods only" in capsys.readouterr().err
    assert main([*argv, "--periods", "3"]) == 2
    assert "--periods: not an option of --method magnitude; use --method lhspg" in capsys.readouterr().err
    assert not out.exists()


def test_the_shipped_recipe_holds_the_defaults():
    own, options = METHODS["lhspg"].split(read_recipe(ROOT / "configs" / "methods" / "lhspg.yaml"), ["multiple_of"], "")
    assert own == {"multiple_of": 1} and LhspgConfig(**options) == LhspgConfig()


def test_recipe_keys_are_checked_and_flags_win(tmp_path, monkeypatch, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("tokens: 1000\nperiods: 3\nlr: 1.0e-3\n")
    argv = ["prune", "m", "--method", "lhspg", "--ratio", "0.2", "-o", str(tmp_path / "out"), "--config", str(recipe)]
    seen = []
    monkeypatch.setattr("lorashear.cli.prune_cmd.prune_model", seen.append)  # where `lorashear prune` calls it
    assert main([*argv, "--lr", "5e-4"]) == 0
    assert (seen[0].options.tokens, seen[0].options.lr, seen[0].options.periods) == (1000, 5e-4, 3)
    recipe.write_text("tokens: 1000\nperiod: 3\n")
    assert main(argv) == 2
    assert re.search(r"unknown key\(s\) in .*r.yaml: period; known: multiple_of; method 'lhspg': .*periods.*tokens",
                     capsys.readouterr().err)
    with pytest.raises(LorashearError, match=r"unknown option\(s\) of method 'lhspg': period; known: .*periods"):
        METHODS["lhspg"].options({"period": 3})  # the Python API: PruneConfig(options={...})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("extra", [[], ["--saliency-steps", "2"]], ids=["calibration", "saliency-steps"])
def test_two_cpu_processes_end_with_the_same_weights(small_vocab_dirs, tmp_path, extra):
    """Hooks edit the weights on every process; run_trained compares their checksums before the merge
    (a difference fails the run), and one process writes the folder. With --saliency-steps each process's
    weight gradients differ (its own rows): the hook averages them over the processes before choosing."""
    out = tmp_path / "two"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "TQDM_DISABLE": "1", "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "configs/accelerate/cpu_2proc.yaml"), "--main_process_port", str(_free_port()),
           "-m", "lorashear", *prune_argv(small_vocab_dirs["llama"], out, "--tokens", "512", *extra)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "pruning.json").read_text())
    assert record["settings"]["training"]["num_processes"] == 2
    assert record["settings"]["schedule"]["total_steps"] == 8  # 512 tokens, 2 × 32 per step
    assert abs(record["achieved_ratio"] - 0.2) < 0.01


def test_a_bfloat16_run_removes_exact_zeros_and_exports_bfloat16(small_vocab_dirs, tmp_path, merged_models):
    """--dtype bfloat16: the base weights train in bf16 (LoRA in fp32), every removed group is exactly zero in the
    merged model, and the exported folder is bf16 (config and tensors)."""
    from safetensors import safe_open

    from lorashear.compress import zero_groups
    from lorashear.graph import groups_from_json

    out = tmp_path / "out"
    assert main(prune_argv(small_vocab_dirs["llama"], out, "--dtype", "bfloat16")) == 0
    (merged,) = merged_models
    assert {p.dtype for p in merged.parameters()} == {torch.bfloat16}
    removed = groups_from_json(json.loads((out / "pruning.json").read_text())["removed"])
    state = {k: v.clone() for k, v in merged.state_dict().items()}
    zero_groups(merged, removed)
    assert all(torch.equal(state[k], v) for k, v in merged.state_dict().items())  # zero already, bit for bit
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
