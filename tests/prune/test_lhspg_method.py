"""`lorashear prune --method lhspg` end to end on tiny real architectures: training with the LHSPG hook,
merge, compress, export; resume; recipes; bad input; two DDP processes."""

from __future__ import annotations

import copy
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

import lorashear
import lorashear.compress
from lorashear.cli import main
from lorashear.compress import zero_groups
from lorashear.errors import LorashearError
from lorashear.graph import Group
from lorashear.prune.lhspg import LhspgConfig
from lorashear.prune.trained import TrainedConfig, load_recipe
from lorashear.train.checkpoint import partial_dir

ROOT = Path(__file__).resolve().parents[2]
IDS = torch.randint(3, 299, (2, 9), generator=torch.Generator().manual_seed(0))
# 8 optimiser steps of one 32-token sequence: 2 warm-up steps, 2 periods of 3 steps.
TINY = ["--tokens", "256", "--seq-len", "32", "--batch-size", "1", "--grad-accum", "1", "--warmup-share", "0.25",
        "--periods", "2", "--data", "tiny-stories,c4", "--calib-samples", "4", "--knowledge-samples", "2"]


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def prune_argv(source, out, *extra) -> list[str]:
    return ["prune", str(source), "--method", "lhspg", "--ratio", "0.2", "-o", str(out), "--unprunable", "fixed",
            *TINY, *extra]


@pytest.fixture
def merged_models(monkeypatch) -> list:
    """Copies of the model `prune_model` hands to compress: LHSPG's result, LoRA merged, not yet compressed."""
    seen = []
    real = lorashear.compress.compress

    def keep_a_copy(model, groups):
        seen.append(copy.deepcopy(model))
        return real(model, groups)

    monkeypatch.setattr(lorashear.compress, "compress", keep_a_copy)
    return seen


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_lhspg_end_to_end(small_vocab_dirs, tmp_path, merged_models, arch):
    out = tmp_path / "out"
    assert main(prune_argv(small_vocab_dirs[arch], out)) == 0
    record = json.loads((out / "pruning.json").read_text())
    assert record["method"] == "lhspg" and abs(record["achieved_ratio"] - 0.2) < 0.01
    settings = record["settings"]
    assert settings["schedule"] == {"total_steps": 8, "warmup_steps": 2, "period_steps": 3, "periods": 2}
    assert settings["saliency"]["criterion"] == "lhspg" and settings["training"]["tokens_seen"] == 256
    removed = [Group.from_dict(g) for g in record["removed"]]
    assert {g.layer for g in removed} <= {1, 2}  # the fixed rule keeps layers 0 and 3 of 4 whole
    assert record["knowledge"]["rule"] == "fixed"

    (merged,) = merged_models
    before = logits(merged)
    zero_groups(merged, removed)
    assert torch.equal(logits(merged), before)  # LHSPG left every removed group exactly zero
    pruned = lorashear.load(str(out), device="cpu")
    assert (logits(pruned) - before).abs().max().item() <= 1e-4

    steps = [json.loads(line) for line in (out / "lhspg" / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps] == list(range(1, 9))
    assert steps[1]["sparsity"] == 0 and steps[-1]["sparsity"] == pytest.approx(record["achieved_ratio"])
    assert sum(steps[-1]["zeroed"].values()) == len(removed)
    assert (out / "lhspg" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert TrainedConfig.from_yaml(out / "lhspg" / "training.yaml").tokens == 256
    assert not partial_dir(out).exists()


def test_resume_after_an_interrupted_run_gives_the_same_plan(small_vocab_dirs, tmp_path, capsys):
    source = small_vocab_dirs["llama"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(prune_argv(source, whole, "--checkpoint-every", "3")) == 0
    assert main(prune_argv(source, split, "--checkpoint-every", "3", "--stop-after-steps", "4")) == 0
    assert not split.exists() and partial_dir(split).is_dir()
    assert "continue with --resume" in capsys.readouterr().out
    assert main(prune_argv(source, split, "--tokens", "512", "--resume")) == 2  # another run: refused
    assert "different options" in capsys.readouterr().err
    assert main(prune_argv(source, split, "--checkpoint-every", "3", "--resume")) == 0
    plan = [json.loads((folder / "pruning.json").read_text())["removed"] for folder in (whole, split)]
    assert plan[0] == plan[1]
    steps = (split / "lhspg" / "steps.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in steps] == list(range(1, 9))


@pytest.mark.parametrize("extra, match", [
    (["--tokens", "10000000"], "more than the training data holds"),
    (["--ratio", "0.6"], "not reachable"),
    (["--saliency", "nonsense"], "unknown criterion"),
    (["--score-option", "colour=red"], "has no option colour"),
    (["--periods", "0"], "periods must be a positive integer"),
    (["--tokens", "32"], "at least one step per period"),
    (["--lambda-rule", "cubic"], None),  # argparse refuses it (exit 2 too)
])
def test_bad_input_is_one_clear_error_and_no_folder(small_vocab_dirs, tmp_path, capsys, extra, match):
    out = tmp_path / "out"
    argv = prune_argv(small_vocab_dirs["llama"], out)
    for flag, value in zip(extra[::2], extra[1::2], strict=True):  # replace TINY's value where it has one
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    if match is None:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    else:
        assert main(argv) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lorashear prune: error:")]
        assert len(errors) == 1 and re.search(match, errors[0]), errors
    assert not out.exists() and not partial_dir(out).exists()


def test_training_flags_are_refused_for_one_shot_methods(small_vocab_dirs, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["prune", str(small_vocab_dirs["llama"]), "--method", "magnitude", "--ratio", "0.2", "-o", str(out)]
    assert main([*argv, "--tokens", "1000"]) == 2
    assert "--tokens: training options apply to trained methods only" in capsys.readouterr().err
    assert main([*argv, "--periods", "3"]) == 2
    assert "LHSPG options; use --method lhspg" in capsys.readouterr().err
    assert not out.exists()


def test_the_shipped_recipe_holds_the_defaults():
    training, options = load_recipe(ROOT / "recipes" / "lhspg.yaml", {}, LhspgConfig)
    assert training == TrainedConfig() and options == LhspgConfig()


def test_recipe_keys_are_checked_and_flags_win(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("tokens: 1000\nperiods: 3\nlr: 1.0e-3\n")
    training, options = load_recipe(recipe, {"lr": 5e-4}, LhspgConfig)
    assert (training.tokens, training.lr, options.periods) == (1000, 5e-4, 3)
    recipe.write_text("tokens: 1000\nperiod: 3\n")
    with pytest.raises(LorashearError, match=r"unknown option\(s\) in .*: period; known: training .*tokens.*"
                                             r"method .*periods"):
        load_recipe(recipe, {}, LhspgConfig)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_end_with_the_same_weights(small_vocab_dirs, tmp_path):
    """Hooks edit the weights on every process; run_trained compares their checksums before the merge
    (a difference fails the run), and one process writes the folder."""
    out = tmp_path / "two"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "TQDM_DISABLE": "1", "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "configs/accelerate/cpu_2proc.yaml"), "--main_process_port", str(_free_port()),
           "-m", "lorashear", *prune_argv(small_vocab_dirs["llama"], out, "--tokens", "512")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "pruning.json").read_text())
    assert record["settings"]["training"]["num_processes"] == 2
    assert record["settings"]["schedule"]["total_steps"] == 8  # 512 tokens, 2 × 32 per step
    assert abs(record["achieved_ratio"] - 0.2) < 0.01
