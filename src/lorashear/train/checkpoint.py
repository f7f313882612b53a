"""Where a run writes: a temporary folder next to OUT (renamed at the end), checkpoints inside it.

Every trained stage (recovery, LHSPG, LoRAPrune) writes this way. An interrupted run leaves
`.OUT.partial/` with its checkpoints; `--resume` continues from the last one. OUT itself appears
only when everything is written, so it never looks finished early.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lorashear.compress.export import PLAN_FILE
from lorashear.errors import LorashearError

CHECKPOINTS = "checkpoints"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def partial_dir(out: str | Path) -> Path:
    """The temporary folder of a run writing to `out`."""
    out = Path(out).expanduser().absolute()
    return out.parent / f".{out.name}.partial"


def check_run_dir(out: str | Path, resume: bool, overwrite: bool = False) -> Path:
    """Check OUT (every process, before any writes) and return the temporary folder to write into;
    `overwrite`: OUT may exist (the caller replaces it at the end)."""
    out = Path(out).expanduser().absolute()
    work = partial_dir(out)
    if out.exists() and not overwrite:
        raise LorashearError(f"{out} already exists; choose another output folder or remove it")
    if not resume and latest_checkpoint(work):
        raise LorashearError(
            f"an unfinished run with checkpoints is in {work}; pass --resume to continue it, "
            "or remove that folder to start over"
        )
    if resume and not latest_checkpoint(work):
        raise LorashearError(f"--resume: no checkpoint in {work / CHECKPOINTS}; start without --resume")
    return work


def start_run_dir(work: Path, resume: bool) -> None:
    """Create the temporary folder; a fresh run clears what a run that died before its first checkpoint left."""
    if not resume and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)


def checkpoint_dir(work: Path, step: int) -> Path:
    return work / CHECKPOINTS / f"step-{step:08d}"


def list_checkpoints(work: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a checkpoint is complete once its marker file is written)."""
    root = work / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / "complete.json").is_file())


def latest_checkpoint(work: Path) -> Path | None:
    found = list_checkpoints(work)
    return found[-1] if found else None


def checkpoint_step(path: Path) -> int:
    return int(json.loads((path / "complete.json").read_text())["step"])


def mark_complete(path: Path, step: int, tokens_seen: int) -> None:
    """Written last: a checkpoint killed half-way is never taken for a good one."""
    (path / "complete.json").write_text(json.dumps({"step": step, "tokens_seen": tokens_seen}))


def prune_checkpoints(work: Path, keep: int) -> None:
    for old in list_checkpoints(work)[: -max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)


def copy_model_extras(source: Path, target: Path) -> None:
    """Copy what `save_pretrained` does not write (remote modeling code, lorashear metadata) from the source folder.

    The pruning record (`pruning.json`) is copied with `"lora": "merged"`: any adapter is in the weights now.

    Pruned lorashear folders carry per-layer shapes in config.json under `lorashear` and may carry
    code; the merged model must reload through the same path as the pruned one.
    """
    if not source.is_dir():
        return
    for item in source.iterdir():
        if item.name.startswith(".") or item.suffix in _WEIGHT_SUFFIXES or item.name.endswith(".index.json"):
            continue
        if item.is_file() and not (target / item.name).exists():
            shutil.copy2(item, target / item.name)
    plan = target / PLAN_FILE
    if plan.is_file():  # the adapter `prune --lora` kept is merged into the recovered weights now
        plan.write_text(json.dumps({**json.loads(plan.read_text()), "lora": "merged"}))
    source_config = source / "config.json"
    target_config = target / "config.json"
    if source_config.is_file() and target_config.is_file():
        src, dst = json.loads(source_config.read_text()), json.loads(target_config.read_text())
        missing = {k: src[k] for k in ("lorashear", "auto_map") if k in src and k not in dst}
        if missing:
            target_config.write_text(json.dumps({**dst, **missing}, indent=2, sort_keys=True))


def finish(work: Path, out: str | Path) -> Path:
    """Drop the checkpoints and rename the temporary folder to OUT."""
    out = Path(out).expanduser().absolute()
    shutil.rmtree(work / CHECKPOINTS, ignore_errors=True)
    work.rename(out)
    return out
