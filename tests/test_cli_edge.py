"""The CLI edge: user errors and bugs each end in one line, never a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

from lorashear.cli import main, prune_cmd
from lorashear.errors import LorashearError

ARGV = ["prune", "some-model", "--ratio", "0.2", "-o", "out"]


def test_unexpected_exception_is_one_line_and_a_trace_file(monkeypatch, tmp_path, capsys):
    def broken(args):
        raise ValueError("first line\nsecond line")

    monkeypatch.setattr(prune_cmd, "run", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(ARGV) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("lorashear prune: internal error: ValueError: first line second line (full trace: ")
    trace = Path(err.split("full trace: ")[1].split(";")[0])
    assert trace.parent == tmp_path
    text = trace.read_text()
    assert text.startswith("lorashear " + " ".join(ARGV)) and "Traceback" in text and "in broken" in text


def test_user_error_is_one_line_exit_2(monkeypatch, capsys):
    def refuse(args):
        raise LorashearError("do this instead")

    monkeypatch.setattr(prune_cmd, "run", refuse)
    assert main(ARGV) == 2
    assert capsys.readouterr().err.strip() == "lorashear prune: error: do this instead"


def test_prune_help_shows_the_trained_defaults_of_the_code(capsys):
    """The training flags' help once hard-coded 200000 tokens and lr 2e-4 after the defaults had changed."""
    import pytest

    from lorashear.prune.lhspg import LhspgConfig
    from lorashear.prune.options import TrainedConfig

    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    defaults = TrainedConfig()
    assert f"(default {defaults.tokens:g})" in text and f"LoRA learning rate (default {defaults.lr:g})" in text
    assert f"groups (any registered criterion); its options via --score-option (default {LhspgConfig.saliency})" in text
    assert "200000" not in text
