import json

import pytest

from lorashear import LorashearError
from lorashear.cli import main
from lorashear.demo import DemoConfig, run_demo
from lorashear.prune.api import PruneConfig


def test_demo_runs_end_to_end_on_a_tiny_model(tiny_llama_dir, tmp_path):
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
    # rerunnable: the demo replaces its own earlier output
    run_demo(config, log=lambda _: None)


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
