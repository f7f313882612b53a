"""docs/cli.md is generated from the argparse parsers (`lorashear.cli.reference`) and kept in step with them."""

from __future__ import annotations

import argparse
from pathlib import Path

from lorashear.cli import build_parser
from lorashear.cli.reference import REGENERATE, reference

CLI_MD = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_committed_reference_is_the_generated_one():
    assert CLI_MD.read_text() == reference(), f"docs/cli.md is stale: regenerate it with `{REGENERATE}`"


def test_every_subcommand_and_option_appears():
    text = reference()
    for name, command in _commands(build_parser()).items():
        assert f"\n## lorashear {name}\n" in text, name
        assert f"(#lorashear-{name})" in text, name
        section = text.split(f"\n## lorashear {name}\n", 1)[1].split("\n## ", 1)[0]
        for action in command._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in section or f", {flag}" in section, (name, flag)


def test_options_are_one_line_each_with_their_default():
    text = reference()
    assert "- `--calib-samples N`: calibration sequences for scoring (default 64)" in text
    assert "- `--structures STRUCTURES`: kinds, comma-separated:" in text
    assert "(default: kv_group,mlp_channel)" in text  # a default the help does not state is appended
    assert "fixed: first 10% of layers" in text and "10%%" not in text  # argparse's %% expanded as --help prints it
    assert REGENERATE in text.splitlines()[0]
