"""Forward-only stages on a model spread over devices (`--device-map`: accelerate's big-model inference).

This machine has no GPU, so the spread here is the CPU plus disk offload (a layer's weights read in at each of its
forwards, meta in the module): the same dispatch hooks a multi-GPU map runs. Evaluation of such a model equals the
whole model's; stages that read or edit the weights (pruning, the knowledge probes) refuse offloaded weights, and take
a map whose layers all sit on devices (here: all on the CPU).
"""

from __future__ import annotations

import json

import pytest

from lorashear.cli import main
from lorashear.errors import LorashearError
from lorashear.models import Placement, input_device, load_model

SPREAD = ["--device-map", "auto", "--max-memory", "cpu=400KB"]  # embeddings and layer 0 on the CPU, the rest on disk
CALIBRATION = ["--calib-samples", "4", "--seq-len", "32", "--batch-size", "2"]


def test_a_model_is_spread_over_the_cpu_and_disk(small_vocab_dirs, tmp_path):
    model = load_model(str(small_vocab_dirs["llama"]), placement=Placement("auto", {"cpu": "400KB"}, str(tmp_path)))
    placed = set(model.hf_device_map.values())
    assert placed == {"cpu", "disk"}, model.hf_device_map
    assert any(p.device.type == "meta" for p in model.parameters()) and str(input_device(model)) == "cpu"


def test_evaluating_a_spread_model_equals_the_whole_model(small_vocab_dirs, tmp_path, capsys):
    folder = str(small_vocab_dirs["llama"])
    run = ["--tasks", "piqa", "--limit", "4", "--ppl-windows", "2", "--batch-size", "2"]
    assert main(["eval", folder, *run, "--json", str(tmp_path / "whole.json")]) == 0
    assert main(["eval", folder, *run, *SPREAD, "--offload-folder", str(tmp_path / "off"),
                 "--json", str(tmp_path / "spread.json")]) == 0
    whole, spread = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("whole", "spread"))
    assert spread["ppl"] == whole["ppl"] and spread["tasks"] == whole["tasks"]
    assert set(spread["settings"]["device_map"].values()) == {"cpu", "disk"} and "device_map" not in whole["settings"]


def test_one_shot_pruning_on_a_device_map_equals_the_plain_load(small_vocab_dirs, tmp_path):
    folder = str(small_vocab_dirs["llama"])
    run = ["--method", "wanda-sp", "--ratio", "0.2", "--unprunable", "none", *CALIBRATION]
    assert main(["prune", folder, *run, "-o", str(tmp_path / "plain")]) == 0
    assert main(["prune", folder, *run, "--device-map", "auto", "-o", str(tmp_path / "mapped")]) == 0
    plain, mapped = (json.loads((tmp_path / n / "pruning.json").read_text()) for n in ("plain", "mapped"))
    assert mapped["removed"] == plain["removed"] and mapped["params_after"] == plain["params_after"]


@pytest.mark.parametrize("argv,message", [
    (["prune", "{m}", "--method", "wanda-sp", "--ratio", "0.2", "--unprunable", "none", *CALIBRATION, *SPREAD, "-o", "{o}"],
     "are offloaded"),
    (["knowledge", "{m}", *CALIBRATION, *SPREAD, "-o", "{o}"], "are offloaded"),
    (["prune", "{m}", "--method", "lhspg", "--ratio", "0.2", "--device-map", "auto", "-o", "{o}"], "launch it sharded with FSDP"),
    (["eval", "{m}", "--device-map", "auto", "--speed"], "time (--speed) models that fit one device"),
    (["eval", "{m}", "--max-memory", "cpu=1GB"], "go with --device-map"),
    (["eval", "{m}", "--device-map", "auto", "--max-memory", "gpu0:1GB"], "DEVICE=SIZE"),
])
def test_what_a_spread_model_cannot_do_is_refused(small_vocab_dirs, tmp_path, capsys, argv, message):
    argv = [a.replace("{m}", str(small_vocab_dirs["llama"])).replace("{o}", str(tmp_path / "out")) for a in argv]
    assert main(argv) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if ": error" in line]
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_placement_and_a_device_together_are_refused(small_vocab_dirs):
    with pytest.raises(LorashearError, match="not both"):
        load_model(str(small_vocab_dirs["llama"]), device="cpu", placement=Placement())
    with pytest.raises(LorashearError, match="--device-map must be one of"):
        Placement("everywhere")
