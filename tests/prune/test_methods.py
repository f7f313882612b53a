"""One-shot methods end to end through the CLI: knowledge analysis, plan, compress, export, reload."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import single_thread  # noqa: F401
from transformers import AutoModelForCausalLM

import lorashear
from lorashear.cli import main
from lorashear.compress import zero_groups
from lorashear.graph import groups_from_json

SMALL = ["--calib-samples", "8", "--seq-len", "32", "--knowledge-samples", "4", "--data", "tiny-stories,c4"]
IDS = torch.randint(3, 299, (2, 9), generator=torch.Generator().manual_seed(0))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


@pytest.mark.parametrize("method, arch, uniform", [
    ("taylor", "llama", False), ("taylor", "qwen2", True), ("wanda-sp", "llama", True),
    ("wanda-sp", "gpt2", False), ("magnitude", "qwen2", False), ("magnitude", "gpt2", True),
    ("flap", "llama", False), ("flap", "qwen2", True), ("flap", "gpt2", False),
])
def test_method_end_to_end(small_vocab_dirs, tmp_path, method, arch, uniform):
    source, out = small_vocab_dirs[arch], tmp_path / "out"
    rule = "fixed" if uniform else "auto"  # fixed: layers 0 and 3 of 4 must be left whole
    argv = ["prune", str(source), "--method", method, "--ratio", "0.2", "-o", str(out), "--unprunable", rule, *SMALL]
    assert main(argv + (["--uniform"] if uniform else [])) == 0
    record = json.loads((out / "pruning.json").read_text())
    assert record["method"] == method and abs(record["achieved_ratio"] - 0.2) < 0.01
    assert record["knowledge"]["rule"] == rule and record["knowledge"]["criterion"] == method
    if method != "magnitude":
        assert record["settings"]["calibration"]["data"] == ["tiny-stories", "c4"]
    if method == "flap":  # the removed channels' mean output went into the output projections' biases
        assert record["settings"]["compensated"]
    knowledge = json.loads((out / "knowledge.json").read_text())
    assert len(knowledge["clusters"]) == 8  # 4 layers × (attention, MLP)
    removed = groups_from_json(record["removed"])
    protected = {c["name"] for c in knowledge["clusters"] if c["unprunable"]}
    if rule == "fixed":
        assert protected == {f"layer{i}.{k}" for i in (0, 3) for k in ("attention", "mlp")}
        assert {g.layer for g in removed} == {1, 2}
    assert not any(f"layer{g.layer}.{'mlp' if g.kind == 'mlp_channel' else 'attention'}" in protected for g in removed)
    original = AutoModelForCausalLM.from_pretrained(source).eval()
    zero_groups(original, removed)
    pruned = lorashear.load(str(out), device="cpu")
    if method == "flap":  # compensation makes it differ from the zeroed original, through added biases
        biases = [t for n, t in pruned.state_dict().items() if n.endswith(("o_proj.bias", "down_proj.bias",
                                                                            "c_proj.bias"))]
        assert biases and any(t.abs().sum() > 0 for t in biases)
        return  # exactness of compensation through export: tests/importance/test_flap.py
    assert (logits(original) - logits(pruned)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("extra, match", [
    (["--method", "taylor", "--data", "wiki"], "evaluation-only"),
    (["--method", "taylor", "--data", "boolq"], "evaluation-only"),
    (["--method", "taylor", "--calib-samples", "100000"], "calibration needs"),
    (["--method", "wanda-sp", "--unprunable-ratio", "1.5"], r"γ must be in \[0, 1\)"),
    (["--method", "taylor", "--score-option", "variant=cubic"], "variant must be one of"),
    (["--method", "taylor", "--score-option", "colour=red"], "has no option colour"),
    (["--method", "taylor", "--batch-size", "0"], "--batch-size must be a positive integer"),
    (["--method", "taylor", "--knowledge-samples", "0"], "--knowledge-samples must be ≥ 1"),
    (["--method", "taylor", "--unprunable", "fixed", "--unprunable-ratio", "0.2"], "drop --unprunable fixed"),
    (["--method", "random", "--score-option", "reduce=mean"], "--score-option: not an option of --method random"),
])
def test_bad_input_is_one_clear_error_and_no_folder(small_vocab_dirs, tmp_path, capsys, extra, match):
    out = tmp_path / "out"
    argv = ["prune", str(small_vocab_dirs["llama"]), "--ratio", "0.2", "-o", str(out), "--seq-len", "32",
            "--calib-samples", "8", "--knowledge-samples", "4", *extra]
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lorashear prune: error:")]
    assert len(errors) == 1 and __import__("re").search(match, errors[0]), errors
    assert not out.exists() or not any(out.iterdir())


def test_knowledge_command(small_vocab_dirs, tmp_path, capsys):
    out = tmp_path / "k"
    assert main(["knowledge", str(small_vocab_dirs["qwen2"]), "--criterion", "taylor", "-o", str(out), *SMALL]) == 0
    table = json.loads((out / "knowledge.json").read_text())
    assert [c["name"] for c in table["clusters"]] == [f"layer{i}.{k}" for i in range(4) for k in ("attention", "mlp")]
    assert table["settings"]["criterion"] == "taylor" and table["settings"]["rule"] == "auto"
    assert (out / "knowledge.png").read_bytes()[:4] == b"\x89PNG"
    assert "layer1.mlp" in capsys.readouterr().out


def test_criterion_options_and_knowledge_ratios_reach_the_plan(small_vocab_dirs, tmp_path):
    out = tmp_path / "out"
    argv = ["prune", str(small_vocab_dirs["llama"]), "--method", "taylor", "--ratio", "0.2", "-o", str(out),
            "--score-option", "variant=vector", "--knowledge-ratios", "0.5", *SMALL]
    assert main(argv) == 0
    plan = json.loads((out / "pruning.json").read_text())
    knowledge = json.loads((out / "knowledge.json").read_text())
    assert plan["settings"]["scores"]["variant"] == "vector"
    assert knowledge["settings"]["scores"]["variant"] == "vector"  # one scoring for both
    assert knowledge["settings"]["ratios"] == [0.5]


def test_magnitude_compares_kinds_per_parameter(small_vocab_dirs, tmp_path):
    """Group L2 norms grow with √size: ranked raw, no KV group would ever be removed next to MLP channels."""
    out = tmp_path / "out"
    argv = ["prune", str(small_vocab_dirs["llama"]), "--method", "magnitude", "--ratio", "0.3", "-o", str(out),
            "--unprunable", "none"]
    assert main(argv) == 0
    kinds = {g["kind"] for g in json.loads((out / "pruning.json").read_text())["removed"]}
    assert kinds == {"kv_group", "mlp_channel"}
