"""`lorashear prune` end to end on tiny saved model folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_models import single_thread, tiny_model, with_random_lora  # noqa: F401
from transformers import AutoModelForCausalLM

import lorashear
from lorashear.cli import main
from lorashear.compress import count_params, zero_groups
from lorashear.graph import groups_from_json
from lorashear.prune.api import PruneConfig

IDS = torch.randint(1, 100, (2, 7), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Tiny llama (GQA, tied) and gpt2 (no GQA) folders, without tokenizer."""
    out = {}
    for arch in ("llama", "gpt2"):
        out[arch] = tmp_path_factory.mktemp(arch)
        tiny_model(arch).save_pretrained(out[arch])
    return out


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def error_lines(capsys) -> list[str]:
    """Our lines on stderr (transformers' loading progress bars aside)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("lorashear prune: error:")]


def check_folder(source: Path, out: Path, ratio: float) -> dict:
    """pruning.json counts are exact, and its slices, zeroed in the original, give the pruned logits."""
    plan = json.loads((out / "pruning.json").read_text())
    original = AutoModelForCausalLM.from_pretrained(source).eval()
    pruned = lorashear.load(str(out), device="cpu")
    assert plan["params_before"] == count_params(original)
    assert plan["params_after"] == count_params(pruned)
    assert abs(1 - plan["params_after"] / plan["params_before"] - ratio) <= 0.01
    removed = groups_from_json(plan["removed"])
    zero_groups(original, removed)
    assert (logits(original) - logits(pruned)).abs().max().item() <= 1e-4
    return plan


def test_uniform_gives_a_plain_folder(folders, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["prune", str(folders["llama"]), "--ratio", "0.2", "--uniform", "--structures", "kv_group,mlp_channel",
            "-o", str(out)]
    assert main(argv) == 0
    assert "removed" in capsys.readouterr().out
    plan = check_folder(folders["llama"], out, 0.2)
    assert plan["plain"] and not (out / "modeling_lorashear.py").exists()
    assert (plan["method"], plan["uniform"], plan["settings"], plan["knowledge"]) == ("random", True, {"seed": 0}, None)
    assert not (out / "plan.json").exists()  # pruning.json is the one record of the plan
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config
    stock = AutoModelForCausalLM.from_pretrained(out).eval()  # no remote code
    assert (logits(stock) - logits(lorashear.load(str(out), device="cpu"))).abs().max().item() == 0
    assert stock.generate(IDS, max_new_tokens=4, do_sample=False).shape == (2, 11)


def test_non_uniform_needs_remote_code(folders, tmp_path):
    out = tmp_path / "out"
    argv = ["prune", str(folders["llama"]), "--ratio", "0.3", "--seed", "3",
            "--structures", "kv_group,query_head,mlp_channel,hidden_channel", "-o", str(out)]
    assert main(argv) == 0
    plan = check_folder(folders["llama"], out, 0.3)
    assert not plan["plain"] and {g["kind"] for g in plan["removed"]} >= {"mlp_channel", "hidden_channel"}
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_lorashear.LorashearForCausalLM"
    remote = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    assert (logits(remote) - logits(lorashear.load(str(out), device="cpu"))).abs().max().item() == 0
    cached = remote.generate(IDS, max_new_tokens=4, do_sample=False, use_cache=True)
    assert torch.equal(cached, remote.generate(IDS, max_new_tokens=4, do_sample=False, use_cache=False))


def test_uniform_with_hidden_channels_exports(folders, tmp_path):
    """The issue's command: uniform hidden-channel removal whose width the stock config refuses."""
    out = tmp_path / "out"
    argv = ["prune", str(folders["llama"]), "--ratio", "0.3", "--uniform",
            "--structures", "kv_group,mlp_channel,hidden_channel", "-o", str(out)]
    assert main(argv) == 0
    plan = check_folder(folders["llama"], out, 0.3)
    hidden = lorashear.load(str(out), device="cpu").get_input_embeddings().weight.shape[1]
    assert hidden < 64 and plan["plain"] == (hidden % 4 == 0)  # the stock llama config wants heads | hidden


def test_multiple_of_the_heads_keeps_the_hidden_channel_export_plain(folders, tmp_path):
    out = tmp_path / "out"
    argv = ["prune", str(folders["llama"]), "--ratio", "0.3", "--uniform", "--multiple-of", "4",
            "--structures", "kv_group,mlp_channel,hidden_channel", "-o", str(out)]
    assert main(argv) == 0
    plan = check_folder(folders["llama"], out, 0.3)
    assert plan["plain"] and "hidden_channel" in {g["kind"] for g in plan["removed"]}
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_size"] % 4 == 0 and config["intermediate_size"] % 4 == 0
    assert plan["settings"]["multiple_of"] == 4


def test_norm_eps_stock_gives_a_plain_qwen3_folder(tmp_path):
    """Uniform hidden channels of Qwen3 (q/k norms share rms_norm_eps): remote code by default, a plain folder
    with --norm-eps stock whose logits stay close to the exact one's: a random model's residual stream has a
    mean square ~4e-4 (embeddings of std 0.02), so each norm's bound is 1 + 1e-6·(1 − 56/64)/(2·4e-4) ≈ 1 + 1.6e-4."""
    source = tmp_path / "qwen3"
    tiny_model("qwen3").save_pretrained(source)
    argv = ["prune", str(source), "--ratio", "0.1", "--uniform", "--multiple-of", "4", "--structures", "hidden_channel"]
    assert main([*argv, "-o", str(tmp_path / "exact")]) == 0
    assert main([*argv, "--norm-eps", "stock", "-o", str(tmp_path / "stock")]) == 0
    exact = json.loads((tmp_path / "exact" / "pruning.json").read_text())
    stock = json.loads((tmp_path / "stock" / "pruning.json").read_text())
    assert not exact["plain"] and exact["norm_eps"] == {"mode": "exact"}
    assert stock["plain"] and stock["norm_eps"]["mode"] == "stock" and stock["removed"] == exact["removed"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "stock").eval()
    reference = lorashear.load(str(tmp_path / "exact"), device="cpu")
    assert 0 < (logits(model) - logits(reference)).abs().max().item() <= 1e-3
    with pytest.raises(lorashear.LorashearError, match="--norm-eps must be one of exact, stock"):
        PruneConfig(str(source), str(tmp_path / "x"), norm_eps="loose")


def test_multi_query_attention_prunes_query_heads(tmp_path, capsys):
    """One KV head per layer: its kv_group is the whole attention (refused, with the reason); query heads go."""
    source = tmp_path / "mqa"
    tiny_model("llama", num_key_value_heads=1).save_pretrained(source)
    argv = ["prune", str(source), "--ratio", "0.1", "-o"]
    assert main([*argv, str(tmp_path / "kv"), "--structures", "kv_group"]) == 2
    [line] = error_lines(capsys)
    assert "no prunable group" in line and "only KV head" in line and "query_head" in line
    assert main([*argv, str(tmp_path / "q"), "--structures", "query_head"]) == 0
    plan = check_folder(source, tmp_path / "q", 0.1)
    assert {g["kind"] for g in plan["removed"]} == {"query_head"}


@pytest.mark.parametrize(
    "arch,extra,message",
    [
        ("llama", ["--ratio", "0"], "ratio must be in (0, 1)"),
        ("llama", ["--ratio", "1.5"], "ratio must be in (0, 1)"),
        ("llama", ["--ratio", "0.2", "--structures", "heads"], "unknown structures ['heads']"),
        ("llama", ["--ratio", "0.2", "--multiple-of", "0"], "--multiple-of must be a positive integer"),
        ("gpt2", ["--ratio", "0.2", "--structures", "query_head"], "no prunable group"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(folders, tmp_path, capsys, arch, extra, message):
    out = tmp_path / "out"
    assert main(["prune", str(folders[arch]), *extra, "-o", str(out)]) == 2
    [line] = error_lines(capsys)
    assert message in line
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_unsupported_operator_is_named(folders, tmp_path, capsys, monkeypatch):
    from lorashear.graph import ops

    monkeypatch.delitem(ops.OPS, torch.ops.aten.silu.default)
    out = tmp_path / "out"
    assert main(["prune", str(folders["llama"]), "--ratio", "0.2", "-o", str(out)]) == 2
    [line] = error_lines(capsys)
    assert "aten.silu" in line and not out.exists()


def test_lora_keeps_the_adapter_of_an_adapter_folder(tiny_llama_dir, tmp_path):
    """`prune ADAPTER_FOLDER --lora` prunes base and adapter together and keeps the adapter unmerged."""
    torch.manual_seed(0)
    adapted = with_random_lora(lorashear.load(str(tiny_llama_dir), device="cpu"))
    adapted.save_pretrained(tmp_path / "adapter")
    common = ["--ratio", "0.01", "--uniform", "--seed", "1"]  # the vocabulary is most of this tiny model
    assert main(["prune", str(tmp_path / "adapter"), *common, "--lora", "-o", str(tmp_path / "kept")]) == 0
    assert main(["prune", str(tmp_path / "adapter"), *common, "-o", str(tmp_path / "merged")]) == 0

    assert (tmp_path / "kept" / "adapter").is_dir() and not (tmp_path / "merged" / "adapter").exists()
    assert json.loads((tmp_path / "kept" / "pruning.json").read_text())["lora"] == "adapter"
    kept, merged = lorashear.load(str(tmp_path / "kept"), device="cpu"), lorashear.load(str(tmp_path / "merged"), device="cpu")
    assert hasattr(kept, "peft_config") and not hasattr(merged, "peft_config")
    assert (logits(kept) - logits(merged)).abs().max().item() <= 1e-4  # the same pruned model, adapter apart
    with kept.disable_adapter():  # and the adapter matters
        assert (logits(kept) - logits(merged)).abs().max().item() > 1e-3


def test_lora_without_an_adapter_is_a_clear_error(folders, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prune", str(folders["llama"]), "--ratio", "0.2", "--lora", "-o", str(out)]) == 2
    [line] = error_lines(capsys)
    assert "--lora keeps the model's LoRA adapter" in line and "has none" in line
    assert not out.exists()


def test_knowledge_from_reuses_an_earlier_analysis(small_vocab_dirs, tmp_path, capsys):
    """`--knowledge-from KNOWLEDGE_JSON`: the earlier analysis's verdict is the plan's unprunable set, nothing is
    probed again, and pruning.json names the file; naming a rule as well is one clear error."""
    source = small_vocab_dirs["llama"]
    assert main(["knowledge", str(source), "--unprunable", "fixed", "-o", str(tmp_path / "k")]) == 0
    verdict = json.loads((tmp_path / "k" / "knowledge.json").read_text())["unprunable"]
    assert verdict  # the fixed rule: layer 0 and the last layer
    argv = ["prune", str(source), "--method", "magnitude", "--ratio", "0.2", "--knowledge-from",
            str(tmp_path / "k" / "knowledge.json")]
    assert main([*argv, "-o", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "pruning.json").read_text())
    assert record["knowledge"]["unprunable"] == verdict
    assert record["knowledge"]["from"] == str(tmp_path / "k" / "knowledge.json")
    kept = {(c.split(".")[0], c.split(".")[1]) for c in verdict}
    assert not any((f"layer{g['layer']}", "attention" if g["kind"] == "kv_group" else "mlp") in kept
                   for g in record["removed"])
    capsys.readouterr()
    assert main([*argv, "--unprunable", "fixed", "-o", str(tmp_path / "both")]) == 2
    [line] = error_lines(capsys)
    assert "drop --unprunable" in line and not (tmp_path / "both").exists()
