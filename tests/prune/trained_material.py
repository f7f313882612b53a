"""Shared checks of the trained methods' end-to-end tests (`lorashear prune --method lhspg|loraprune`):
the export against the merged model, resume equivalence, bad input."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import lorashear
from lorashear.cli import main
from lorashear.compress import zero_groups
from lorashear.graph import Group, groups_from_json
from lorashear.prune.trained import TrainedConfig
from lorashear.train.checkpoint import partial_dir

IDS = torch.randint(3, 299, (2, 9), generator=torch.Generator().manual_seed(0))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def check_export(out: Path, merged_models: list, steps: int, tokens: int) -> tuple[dict, list[Group], list[dict]]:
    """The removed groups were exactly zero in the merged model, the export computes what it did, and the
    method's logs (`METHOD/steps.jsonl`, curves, training options) came along. (record, removed, step log)"""
    record = json.loads((out / "pruning.json").read_text())
    assert abs(record["achieved_ratio"] - record["ratio"]) < 0.01
    assert record["settings"]["training"]["tokens_seen"] == tokens
    removed = groups_from_json(record["removed"])
    (merged,) = merged_models
    before = logits(merged)
    zero_groups(merged, removed)
    assert torch.equal(logits(merged), before)  # the method left every removed group exactly zero
    pruned = lorashear.load(str(out), device="cpu")
    assert (logits(pruned) - before).abs().max().item() <= 1e-4

    folder = out / record["method"]
    log = [json.loads(line) for line in (folder / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, steps + 1))
    assert log[-1]["sparsity"] == pytest.approx(record["achieved_ratio"])
    assert (folder / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert TrainedConfig.from_yaml(folder / "training.yaml").tokens == tokens
    assert not partial_dir(out).exists()
    return record, removed, log


def check_resume(argv: Callable[..., list[str]], source: Path, tmp_path: Path, capsys) -> None:
    """A run stopped after 4 steps and resumed plans what an uninterrupted run plans, step log whole."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(argv(source, whole, "--checkpoint-every", "3")) == 0
    assert main(argv(source, split, "--checkpoint-every", "3", "--stop-after-steps", "4")) == 0
    assert not split.exists() and partial_dir(split).is_dir()
    assert "continue with --resume" in capsys.readouterr().out
    assert main(argv(source, split, "--tokens", "512", "--resume")) == 2  # another run: refused
    assert "different options" in capsys.readouterr().err
    assert main(argv(source, split, "--checkpoint-every", "3", "--resume")) == 0
    records = [json.loads((folder / "pruning.json").read_text()) for folder in (whole, split)]
    assert records[0]["removed"] == records[1]["removed"]
    method = records[0]["method"]
    logs = [(folder / method / "steps.jsonl").read_text().splitlines() for folder in (whole, split)]
    assert [json.loads(line)["step"] for line in logs[1]] == [json.loads(line)["step"] for line in logs[0]]


def check_bad_input(argv: list[str], extra: list[str], match: str | None, capsys) -> None:
    """`argv` with `extra`'s flags (replacing its values where it has them) fails with one error line and
    exit 2 (argparse's own refusals when `match` is None), leaving no output or run folder."""
    argv = list(argv)
    out = Path(argv[argv.index("-o") + 1])
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
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
