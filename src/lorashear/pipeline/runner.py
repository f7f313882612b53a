"""`run_recipe`: the stages in order, each in its own folder under OUT, skipped once finished.

OUT/
  recipe.yaml            the resolved recipe (a resume must resolve to the same one)
  run.json               every invocation's command, versions, hardware; seconds per stage
  01-analyze/ 02-knowledge/ 03-prune/ 04-recover/ 05-evaluate/   (config.yaml + outputs + DONE)
  report.md, report.html, figures/  regenerated at the end (`lorashear report OUT`)

A stage writes into `.NN-name.partial/`, which is renamed to `NN-name/` when it finishes; the DONE
marker is written last, so only a stage with DONE counts as finished (Ctrl-C leaves nothing that
looks done). A stage's partial folder is cleared before it reruns, except for resumable stages,
whose own checkpoints (recovery's `--resume`) continue the interrupted run.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from lorashear.errors import LorashearError
from lorashear.evaluate.speed import _load_average, machine_state
from lorashear.io import write_atomic
from lorashear.models import default_device, dtype_name, resolve_dtype
from lorashear.pipeline import stages
from lorashear.pipeline.folders import DONE, RECIPE_FILE, RUN_FILE, STAGE_NAMES, finished_folder, stage_folder
from lorashear.pipeline.recipe import Recipe
from lorashear.pipeline.report import write_report
from lorashear.train.config import load_yaml


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: its name, what it runs, when the recipe switches it on, whether it resumes."""

    name: str
    run: Callable[[stages.StageContext], bool]
    enabled: Callable[[Recipe], bool]
    resumable: bool = False  # keep the partial folder of an interrupted run (the stage resumes from it)


_STAGES = {stage.name: stage for stage in (
    Stage("analyze", stages.analyze, lambda r: r.enabled("analyze")),
    Stage("knowledge", stages.knowledge, stages.knowledge_enabled),
    Stage("prune", stages.prune, lambda r: True, resumable=True),  # a trained method resumes its run
    Stage("recover", stages.recover, lambda r: r.enabled("recover"), resumable=True),
    Stage("evaluate", stages.evaluate, lambda r: r.enabled("evaluate"), resumable=True),
)}
STAGES = tuple(_STAGES[name] for name in STAGE_NAMES)  # in the run folder's order (folders.STAGE_NAMES)


@dataclass
class RunResult:
    out: Path
    finished: bool  # False: a stage stopped early on purpose; rerun with --resume
    ran: list[str]
    skipped: list[str]


def run_recipe(recipe: Recipe, out: str | Path, resume: bool = False, log: Callable[[str], None] = print,
               command: list[str] | None = None) -> RunResult:
    """Run every enabled stage not finished yet, then write the report; returns what ran."""

    out = Path(out)
    _check_out(recipe, out, resume)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / RECIPE_FILE, recipe.to_yaml())
    run_log = _start_log(out, command, dtype_name(resolve_dtype(recipe.dtype)))
    ran, skipped = [], []
    for stage in STAGES:
        folder = stage_folder(out, stage.name)
        if not stage.enabled(recipe):
            log(f"== {stage.name}: off in this recipe")
            continue
        if (folder / DONE).is_file():
            log(f"== {stage.name}: finished earlier ({folder}), skipped")
            skipped.append(stage.name)
            continue
        log(f"== {stage.name} -> {folder}")
        timed = _run_stage(stage, recipe, out, folder, log)
        if timed is None:
            return RunResult(out, False, ran, skipped)
        seconds, resumed = timed
        run_log["seconds"][stage.name] = seconds
        # a resumed stage's seconds are this attempt's only (an attempt that was killed cannot say how long it ran)
        run_log["resumed"] = [name for name in run_log.get("resumed", []) if name != stage.name] + (
            [stage.name] if resumed else [])
        write_atomic(out / RUN_FILE, json.dumps(run_log, indent=2) + "\n")
        ran.append(stage.name)
    report = write_report(out)
    log(f"report: {report}")
    return RunResult(out, True, ran, skipped)


def _run_stage(stage: Stage, recipe: Recipe, out: Path, folder: Path,
               log: Callable[[str], None]) -> tuple[float, bool] | None:
    """Run one stage in its partial folder, rename it into place, then mark it done; returns its seconds and
    whether it resumed an earlier attempt's partial folder, or None if it stopped early."""
    if folder.exists():  # renamed but never marked: an interrupted finish, redo it
        shutil.rmtree(folder)
    work = out / f".{folder.name}.partial"
    if work.exists() and not stage.resumable:
        shutil.rmtree(work)
    resumed = work.exists()
    work.mkdir(exist_ok=True)
    ctx = stages.StageContext(recipe, out, work, lambda name: finished_folder(out, name), log)
    start = time.perf_counter()
    if not stage.run(ctx):
        return None
    seconds = time.perf_counter() - start
    work.rename(folder)
    marker = {"stage": stage.name, "seconds": seconds, "resumed": resumed, "finished": _now()}
    write_atomic(folder / DONE, json.dumps(marker, indent=2) + "\n")  # last: only now is the stage done
    return seconds, resumed


def _check_out(recipe: Recipe, out: Path, resume: bool) -> None:
    """A used OUT needs --resume, and a resume the same resolved recipe (finished stages depend on it)."""
    if not out.exists() or not any(out.iterdir()):
        return
    saved = out / RECIPE_FILE
    if not saved.is_file():
        raise LorashearError(f"{out} exists and holds no lorashear run; choose another output folder")
    if not resume:
        raise LorashearError(f"{out} holds a run already; pass --resume to continue it, or choose another folder")
    before, now = Recipe(load_yaml(saved.read_text())).same_run(), recipe.same_run()
    if before != now:
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        raise LorashearError(f"--resume with a different recipe than {saved} (sections {', '.join(changed)} differ); "
                             "use the same recipe and overrides, or a new output folder")


def _start_log(out: Path, command: list[str] | None, dtype: str) -> dict:
    """run.json: every invocation (command, time, versions, hardware), the weights' dtype of every stage and the
    seconds of each stage run."""
    path = out / RUN_FILE
    run_log = json.loads(path.read_text()) if path.is_file() else {"invocations": [], "seconds": {}}
    run_log["dtype"] = dtype
    run_log["invocations"].append({"command": command or [sys.executable, *sys.argv], "started": _now(),
                                   "versions": versions(), "hardware": hardware()})
    write_atomic(path, json.dumps(run_log, indent=2) + "\n")
    return run_log


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("lorashear", "torch", "transformers", "peft", "accelerate", "lm_eval"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def hardware() -> dict:
    """The device (CPU model or GPU name), cores, torch threads, platform and the 1-minute load average."""
    machine = machine_state(default_device(), [])
    return {"device": machine.device_name, "cpu_count": machine.cpu_count, "torch_threads": machine.torch_threads,
            "platform": platform.platform(), "load_average": _load_average()}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
