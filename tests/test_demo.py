import dataclasses
import functools
import json

import pytest

import lorashear.demo
from lorashear import LorashearError
from lorashear.cli import main
from lorashear.demo import DemoConfig, run_demo
from lorashear.prune.api import PruneConfig


def test_demo_runs_end_to_end_on_a_tiny_model(tiny_llama_dir, tmp_path, monkeypatch):
    out = tmp_path / "demo"
    # the tiny model is mostly embedding (not prunable by the default kinds): a small ratio is reachable
    config = DemoConfig(model=str(tiny_llama_dir), output=str(out), ratio=0.01, ppl_windows=2, limit=2, speed=False)
    summary = run_demo(config, log=lambda _: None)
    assert summary["pruned"]["params"] < summary["dense"]["params"]
    assert abs(summary["achieved_ratio"] - 0.01) < 0.01
    assert set(summary["dense"]["tasks"]) == set(summary["pruned"]["tasks"]) and len(summary["dense"]["tasks"]) == 7
    assert json.loads((out / "summary.json").read_text())["config"]["ratio"] == 0.01
    table = (out / "summary.md").read_text()
    assert "| zero-shot average |" in table
    assert "| PPL wiki (2 × 512 (BOS <\\|im_start\\|> + 511 text tokens)) |" in table  # one cell: pipes escaped
    assert summary["speed"] is None

    # Rerunnable (the demo replaces its own earlier output), here with speed: one alternating comparison.
    short = functools.partial(lorashear.demo.compare, rounds=2, prefill_tokens=16, decode_tokens=2,
                              decode_prompt_tokens=4)  # the tiny model's figures, not their size, are tested
    monkeypatch.setattr(lorashear.demo, "compare", short)
    summary = run_demo(dataclasses.replace(config, speed=True), log=lambda _: None)
    speed = summary["speed"]
    assert [m["name"] for m in speed["models"]] == ["dense", "pruned"] and len(speed["models"][1]["rounds"]["decode"]) == 2
    assert speed["machine"]["load"] and speed["machine"]["torch_threads"] >= 1
    table = (out / "summary.md").read_text()
    ratio = speed["models"][1]["ratio"]["prefill"]
    assert "| | dense | pruned | pruned / dense |" in table
    assert "| prefill tok/s (16 tokens) | " in table
    assert f"| {ratio['median']:.2f}× ({ratio['min']:.2f}–{ratio['max']:.2f}) |" in table
    assert "Models alternated in one window: 2 rounds" in table and "Machine: cpu" in table


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ratio": 1.5}, "ratio must be in"),
        ({"ratio": 0.0}, "ratio must be in"),
        ({"kinds": ("heads",)}, "unknown structures"),
        ({"kinds": ()}, "no structures"),
        ({"method": "oracle"}, "unknown method"),
    ],
)
def test_prune_config_rejects_bad_input(kwargs, message):
    with pytest.raises(LorashearError, match=message):
        PruneConfig("m", "out", **kwargs)


def test_demo_cli_rejects_bad_settings_before_any_work(capsys, tmp_path):
    assert main(["demo", "--limit", "0", "-o", str(tmp_path / "d")]) == 2
    assert "limit" in capsys.readouterr().err
    assert main(["demo", "--ratio", "2", "-o", str(tmp_path / "d")]) == 2
    assert not (tmp_path / "d").exists()
