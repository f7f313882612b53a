"""The analyze subcommand on a tiny saved model folder."""

from __future__ import annotations

import json

from tiny_models import HIDDEN, LAYERS, MLP, tiny_model, with_random_lora

from lorashear.cli import main
from lorashear.graph import StructureGraph


def test_analyze_prints_counts_and_writes_json(tmp_path, capsys):
    folder = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(folder)
    out = tmp_path / "groups.json"
    assert main(["analyze", str(folder), "--lora", "--kinds", "kv_group,mlp_channel,hidden_channel", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"mlp_channel      {LAYERS * MLP:8d} {LAYERS * MLP:9d}" in printed
    data = json.loads(out.read_text())
    kinds = [g["kind"] for g in data["groups"]]
    assert kinds.count("hidden_channel") == HIDDEN and kinds.count("kv_group") == LAYERS * 2
    assert any("lora_B" in s["param"] for g in data["groups"] for s in g["slices"])
    graph = StructureGraph.from_dict(data)
    for kind in ("kv_group", "mlp_channel", "hidden_channel"):  # the table's totals are the JSON's groups
        row = next(line.split() for line in printed.splitlines() if line.startswith(kind + " "))
        assert int(row[-1]) == sum(g.num_params(graph.param_shapes) for g in graph.of_kind(kind))


def test_analyze_rejects_unknown_kind(tmp_path, capsys):
    folder = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(folder)
    assert main(["analyze", str(folder), "--kinds", "heads"]) == 2
    assert "unknown group kinds" in capsys.readouterr().err


def test_analyze_an_adapter_folder_sees_its_lora(tmp_path, capsys):
    """A peft adapter folder is analyzed with its adapter; --lora on it (a second adapter) is refused."""
    tiny_model("llama").save_pretrained(tmp_path / "base")
    with_random_lora(tiny_model("llama")).save_pretrained(tmp_path / "ad")
    config = tmp_path / "ad" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": str(tmp_path / "base")}))
    out = tmp_path / "groups.json"
    assert main(["analyze", str(tmp_path / "ad"), "--json", str(out)]) == 0
    assert any("lora_B" in s["param"] for g in json.loads(out.read_text())["groups"] for s in g["slices"])
    assert main(["analyze", str(tmp_path / "ad"), "--lora"]) == 2
    assert "already has an adapter; drop --lora" in capsys.readouterr().err


def test_analyze_reads_no_weights_and_finds_what_a_loaded_model_has(tmp_path, monkeypatch):
    """analyze traces the meta-device skeleton (no weight read): the same groups as a graph of the loaded model."""
    from lorashear.graph import GROUP_KINDS, build_graph
    from lorashear.models import load_model

    folder = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(folder)
    loaded = build_graph(load_model(str(folder), device="cpu"), kinds=GROUP_KINDS)
    import lorashear.models

    monkeypatch.setattr(lorashear.models, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    out = tmp_path / "groups.json"
    assert main(["analyze", str(folder), "--kinds", "all", "--dtype", "bfloat16", "--json", str(out)]) == 0
    assert StructureGraph.from_dict(json.loads(out.read_text())).to_dict()["groups"] == loaded.to_dict()["groups"]
