"""`lorashear prune --method loraprune` end to end on tiny real architectures: LoRA training with the
LoRAPrune hook's masks, merge, compress, export; resume; recipes; bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from accelerate_state import fresh_accelerate_state  # noqa: F401
from tiny_models import single_thread  # noqa: F401
from trained_material import check_bad_input, check_export, check_resume

from lorashear.cli import main
from lorashear.prune import METHODS
from lorashear.prune.loraprune import LorapruneConfig
from lorashear.train.config import read_recipe

ROOT = Path(__file__).resolve().parents[2]
# 8 optimiser steps of one 32-token sequence: 2 warm-up steps, masks after 0-based steps 2 and 4, the
# target from step 6 (cool-down).
TINY = ["--tokens", "256", "--seq-len", "32", "--batch-size", "1", "--grad-accum", "1", "--warmup-share", "0.25",
        "--cooldown-share", "0.25", "--mask-every", "2", "--data", "tiny-stories,c4", "--calib-samples", "4",
        "--knowledge-samples", "2"]


def prune_argv(source, out, *extra) -> list[str]:
    return ["prune", str(source), "--method", "loraprune", "--ratio", "0.2", "-o", str(out), "--unprunable",
            "fixed", *TINY, *extra]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_loraprune_end_to_end(small_vocab_dirs, tmp_path, merged_models, arch):
    out = tmp_path / "out"
    assert main(prune_argv(small_vocab_dirs[arch], out)) == 0
    record, removed, steps = check_export(out, merged_models, steps=8, tokens=256)
    assert record["method"] == "loraprune"
    settings = record["settings"]
    assert settings["schedule"] == {"total_steps": 8, "warmup_share": 0.25, "cooldown_share": 0.25, "mask_every": 2}
    assert settings["criterion"]["criterion"] == "lora-grad"
    assert settings["loraprune"]["beta"] == 0.9 and settings["training"]["steps"] == 8
    assert {g.layer for g in removed} <= {1, 2}  # the fixed rule keeps layers 0 and 3 of 4 whole
    assert record["knowledge"]["rule"] == "fixed"
    masked = [sum(r["masked"].values()) for r in steps]
    assert masked[:2] == [0, 0] and masked == sorted(masked) and masked[-1] == len(removed)  # masks only grow
    assert [r["scheduled_ratio"] for r in steps][-2:] == [0.2, 0.2]


def test_subtract_cross_and_score_options_reach_the_criterion(small_vocab_dirs, tmp_path):
    out = tmp_path / "out"
    argv = prune_argv(small_vocab_dirs["llama"], out, "--subtract-cross", "--score-option", "reduce=mean")
    assert main(argv) == 0
    settings = json.loads((out / "pruning.json").read_text())["settings"]
    assert settings["loraprune"]["subtract_cross"] is True
    assert settings["loraprune"]["criterion_options"] == {"reduce": "mean"}
    assert settings["criterion"]["subtract_cross"] is True and settings["criterion"]["reduce"] == "mean"


def test_resume_after_an_interrupted_run_gives_the_same_plan(small_vocab_dirs, tmp_path, capsys):
    check_resume(prune_argv, small_vocab_dirs["llama"], tmp_path, capsys)


@pytest.mark.parametrize("extra, match", [
    (["--tokens", "10000000"], "more than the training data holds"),
    (["--ratio", "0.6"], "not reachable"),
    (["--beta", "1.0"], "beta"),
    (["--mask-every", "0"], "mask period"),
    (["--cooldown-share", "0.8"], "sum must be below 1"),
    (["--score-option", "gradients=calibration"], "drop the 'gradients' option"),
    (["--score-option", "colour=red"], "has no option colour"),
    (["--periods", "3"], "--periods: not an option of --method loraprune; use --method lhspg"),
    (["--mask-every", "two"], None),  # argparse refuses it (exit 2 too)
])
def test_bad_input_is_one_clear_error_and_no_folder(small_vocab_dirs, tmp_path, capsys, extra, match):
    check_bad_input(prune_argv(small_vocab_dirs["llama"], tmp_path / "out"), extra, match, capsys)


def test_the_shipped_recipe_holds_the_defaults():
    own, options = METHODS["loraprune"].split(read_recipe(ROOT / "configs" / "methods" / "loraprune.yaml"), ["multiple_of"], "")
    assert own == {"multiple_of": 1} and LorapruneConfig(**options) == LorapruneConfig()


def test_the_pipeline_recipe_loads():
    import yaml

    from lorashear.pipeline import recipe_from_dict

    recipe = recipe_from_dict(yaml.safe_load((ROOT / "recipes" / "loraprune-20.yaml").read_text()))
    recipe.check()
    config = recipe.prune("out")
    assert config.method == "loraprune" and config.knowledge.rule == "fixed"
    assert config.options.tokens == 49_152 and config.options == LorapruneConfig()


@pytest.mark.parametrize("method, extra, match", [
    ("magnitude", ["--mask-every", "5"], "--mask-every: not an option of --method magnitude; use --method loraprune$"),
    ("magnitude", ["--warmup-share", "0.2"], "use --method lhspg or loraprune$"),
    ("lhspg", ["--subtract-cross"], "--subtract-cross: not an option of --method lhspg; use --method loraprune$"),
])
def test_method_flags_are_refused_by_methods_without_them(small_vocab_dirs, tmp_path, capsys, method, extra, match):
    out = tmp_path / "out"
    argv = ["prune", str(small_vocab_dirs["llama"]), "--method", method, "--ratio", "0.2", "-o", str(out), *extra]
    assert main(argv) == 2
    assert re.search(match, capsys.readouterr().err.strip())
    assert not out.exists()
