"""Helpers the benchmark scripts share (results folder and lock, machine line, child processes, scoring) and the
facts a script writes that its table in render.py reads (the methods rows, ...); no script imports another.

Imports: benchmarks/ is on sys.path (a script's run, pytest's `pythonpath`): files import `_common`, `render`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from lorashear.evaluate import AVERAGE_METRIC, evaluate
from lorashear.models import load_model, load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


# ---------------------------------------------------------------------------------------------- running


def command_line() -> str:
    """How this benchmark was run, as its results record it: `PYTHONPATH=src python benchmarks/NAME.py ARGS`, each
    argument quoted where the shell needs it (a label with spaces)."""
    script = Path(sys.argv[0]).name
    return f"PYTHONPATH=src python benchmarks/{script} {shlex.join(sys.argv[1:])}".strip()


def machine() -> dict:
    """CPU, cores, torch threads and load average, as the discovery benchmarks record them before and after."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def machine_text() -> str:
    """One line for a results file: CPU, cores, torch and its device (the load goes with each figure)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {device}"


def run_child(argv: list[str], out: Path, cwd: Path | None = None) -> dict:
    """`python ARGV` (`-m lorashear …` or a script) in a child process, its log echoed line by line as it runs:
    the command (`out` written OUT), wall seconds and peak RSS measured from the outside. A failure stops the run."""
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    start, tail = time.time(), collections.deque(maxlen=40)
    child = subprocess.Popen([sys.executable, *argv], env=env, cwd=cwd,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in child.stdout:
        tail.append(line)
        print(f"    {line.rstrip()}", flush=True)
    _, status, usage = os.wait4(child.pid, 0)
    command = " ".join(argv).replace(str(out), "OUT")
    command = "lorashear " + command.removeprefix("-m lorashear ") if argv[:2] == ["-m", "lorashear"] else "python " + command
    if status != 0:
        raise SystemExit(f"{command} failed (exit {status >> 8}):\n{''.join(tail)}")
    return {"command": command, "seconds": round(time.time() - start, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


@contextlib.contextmanager
def results_lock(name: str) -> Iterator[None]:
    """Held while a process reads and rewrites results/NAME.json that other runs of its script share."""
    with open(Path(tempfile.gettempdir()) / f"lorashear-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def score(folder: str, part: str, args: argparse.Namespace) -> dict:
    """One part of a row's evaluation: `ppl` (wiki, first --ppl-windows windows) or `tasks` (the seven, first
    --limit documents); importance.py and methods.py score every row and the dense model with it."""
    model, tokenizer = load_model(folder, device="cpu"), load_tokenizer(folder)
    start = time.time()
    if part == "ppl":
        result = evaluate(model, tokenizer, ppl_windows=args.ppl_windows, tasks=())
        ppl = result.ppl["wiki"]
        out = {"ppl": ppl.ppl, "windows": ppl.windows, "convention": ppl.describe()}
    else:
        result = evaluate(model, tokenizer, ppl_corpora=(), tasks=tuple(AVERAGE_METRIC), limit=args.limit)
        out = {"avg": result.avg, "limit": args.limit,
               "tasks": {t: getattr(s, AVERAGE_METRIC[t]) for t, s in result.tasks.items()}}
    out["seconds"] = round(time.time() - start, 1)
    out["load_avg"] = round(os.getloadavg()[0], 1)
    return out


# ---------------------------------------------------------------------------------------------- methods.py's rows
# methods.py runs them; render.py lists every one of them, measured or pending.

METHODS_MODEL = "smollm2-135m"
METHODS_RECIPE = ROOT / "benchmarks" / "methods_base.yaml"  # also the torch-pruning baseline's calibration and recovery
SCORED_MODELS = {"pruned": "prune", "recovered": "recover"}  # scored model -> the pipeline stage that wrote it
# name -> (what it is, overrides of the base recipe). Every row: same calibration, recovery data and tokens.
METHOD_ROWS = {
    "random": ("uniformly random groups, no analysis", ["prune.method=random", "knowledge=null"]),
    "taylor-auto": ("LLM-Pruner's Taylor, one shot, data-driven analysis", ["prune.method=taylor"]),
    "flap": ("FLAP (its own adaptive selection and bias compensation)", ["prune.method=flap", "knowledge=null"]),
    "wanda-sp-auto": ("Wanda-SP, one shot, data-driven analysis", ["prune.method=wanda-sp"]),
    "magnitude-auto": ("weight magnitude, one shot, data-driven analysis", ["prune.method=magnitude"]),
    "lhspg-auto": ("LoRAShear: LHSPG, data-driven analysis", []),
    "lhspg-product-slow": ("LHSPG with its first defaults: LoRA-product saliency, 49 steps of 16 x 256 at lr 2e-4",
                           ["prune.saliency=lhspg", "prune.tokens=200000", "prune.grad_accum=4", "prune.lr=2e-4"]),
    "lhspg-auto-s16": ("LHSPG, its Taylor saliency on the first 16 of the 64 calibration samples (a quarter of "
                       "the period-start cost)", ["prune.saliency_samples=16"]),
    "lhspg-fixed": ("LoRAShear: LHSPG, fixed rule (first 10% of layers, last layer)", ["knowledge.rule=fixed"]),
    "lhspg-fixed-steps4": ("LHSPG, fixed rule, its Taylor saliency from the weight gradients of the 4 training steps "
                           "that end at each period start (no calibration pass)",
                           ["knowledge.rule=fixed", "prune.saliency_steps=4"]),
    "lhspg-fade": ("LHSPG, the authors' released multiplicative fade", ["prune.variant=fade"]),
    "lhspg-wanda-sp": ("LHSPG with Wanda-SP as its saliency (the best one-shot choice after recovery at 20%), "
                       "data-driven analysis", ["prune.saliency=wanda-sp"]),
    "loraprune-fixed": ("LoRAPrune (its released fixed rule)", ["prune.method=loraprune", "knowledge.rule=fixed"]),
    "taylor-auto-150k": ("Taylor + 149K recovery tokens: LHSPG's 49K training + 100K recovery",
                         ["prune.method=taylor", "recover.tokens=149152"]),
    "wanda-sp-auto-150k": ("Wanda-SP + 149K recovery tokens: LHSPG's 49K training + 100K recovery",
                           ["prune.method=wanda-sp", "recover.tokens=149152"]),
    # prune.group_divisible is multiple_of's old name (every method's channel multiple); kept here, as rows
    # already run resume only with the same recipe.
    "lhspg-auto-m64": ("LoRAShear: LHSPG, kept MLP/hidden channels a multiple of 64 (widths llama.cpp runs fast)",
                       ["prune.group_divisible=64"]),
    "lhspg-wanda-sp-m64": ("LHSPG with Wanda-SP saliency, kept MLP/hidden channels a multiple of 64",
                           ["prune.saliency=wanda-sp", "prune.group_divisible=64"]),
}
# The shipped recipes on the default model, each the base recipe with one row's overrides at one ratio: what
# the rows measured is what they run (tests/test_benchmarks.py resolves both). lorashear-20.yaml rounds widths to
# 64 since the seeds rows (docs/results.md, Seeds); lorashear-50.yaml's m64 row is not measured yet.
RECIPE_ROWS = {"lorashear-20.yaml": (0.2, "lhspg-auto-m64"), "lorashear-50.yaml": (0.5, "lhspg-auto")}
# The pruning run's seed: the calibration draw (knowledge analysis, one-shot scores, LHSPG's saliency) and a
# trained method's data order and LoRA init. The base recipe sets none: every one is its dataclass's 0.
DEFAULT_SEED = 0
# Rows that are not the recipe: an external package's own pruning, then the recipe's recovery (same layout).
BASELINE_ROWS = {
    "torch-pruning": ("Torch-Pruning 1.6.1: its Taylor importance, uniform width (heads whole), our recovery",
                      "benchmarks/torch_pruning_baseline.py"),
}
ALL_METHOD_ROWS = [*METHOD_ROWS, *BASELINE_ROWS]


def method_row_key(ratio: float, name: str, seed: int = DEFAULT_SEED) -> str:
    """"20% lhspg-auto" for the recipe's seed, "20% lhspg-auto seed=1" for another."""
    key = f"{round(ratio * 100)}% {name}"
    return key if seed == DEFAULT_SEED else f"{key} seed={seed}"


def split_method_key(key: str) -> tuple[str, str, int]:
    """A row key's (ratio text, row name, seed): the inverse of `method_row_key`."""
    ratio, rest = key.split(" ", 1)
    name, _, seed = rest.partition(" seed=")
    return ratio, name, int(seed) if seed else DEFAULT_SEED


# ---------------------------------------------------------------------------------------------- the other tables'

DENSE_PARTS = ("ppl", "tasks", "speed")  # dense_baseline.py's parts, each with the command that measured it
GGUF_PREFILL, GGUF_DECODE = 512, 128  # gguf_speed.py's prompt and new tokens
MEMORY_STAGES = ("analyze", "taylor", "lhspg", "recover", "eval")  # memory_scale.py's stages, in the table's order
# What the stages import before they touch a model: the baseline every memory_scale.py row's peak is taken above.
IMPORT_ONLY = ("import torch, transformers, peft, accelerate, lorashear.cli, lorashear.prune, lorashear.recover, "
               "lorashear.evaluate; from transformers.models.llama import modeling_llama")
RANDOM_PRUNING_NOTE = (  # recovery.py's own prune (its table tells it from a given `--pruned` folder by this note)
    "random structured pruning (`lorashear prune --method random --uniform`): a floor, not LoRAShear; "
    "recovery from random pruning says little about LoRAShear's own numbers (`--pruned` takes an LHSPG folder)"
)


def dense_parts(settings: dict) -> dict[str, dict]:
    """Per part of a dense baseline, the command that measured it and its wall time (older files: one command)."""
    if "parts" in settings:
        return settings["parts"]
    return {part: {"command": settings["command"], "wall_seconds": settings["wall_seconds"]} for part in DENSE_PARTS}
