"""Group discovery on a real model (default: SmolLM2-135M): counts and parameters per kind, discovery time.

    PYTHONPATH=src python benchmarks/graph_discovery.py [--model smollm2-135m] [--repeats 2]

Writes benchmarks/results/graph_discovery.{json,md}. Times are wall-clock on CPU; the load
average is recorded next to them (the machine is shared).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from lorashear.cli.analyze_cmd import kind_stats
from lorashear.graph import DEFAULT_KINDS, GROUP_KINDS, build_graph
from lorashear.models import DEFAULT_MODEL, load_model

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
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


def write_results(name: str, data: dict, markdown: str) -> None:
    """benchmarks/results/NAME.json and NAME.md, each written to a temp file and renamed."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(data, indent=2)), (".md", markdown)):
        with tempfile.NamedTemporaryFile("w", dir=RESULTS, prefix=f".{name}", delete=False) as f:
            f.write(text)
        Path(f.name).replace(RESULTS / f"{name}{suffix}")
    print(f"wrote {RESULTS / name}.json and .md")
    from write_benchmarks_md import write  # BENCHMARKS.md gathers every table: keep it in step

    write()


def with_lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=8, target_modules="all-linear")).eval()


def timed(fn, repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(round(time.perf_counter() - start, 2))
    return times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    runs = {}
    for lora in (False, True):
        model = load_model(args.model, device="cpu")
        if lora:
            model = with_lora(model)
        label = "lora" if lora else "base"
        runs[label] = {"machine_before": machine()}
        for kinds_label, kinds in (("default_kinds", DEFAULT_KINDS), ("all_kinds", GROUP_KINDS)):
            times, graph = timed(lambda model=model, kinds=kinds: build_graph(model, kinds=kinds), args.repeats)
            runs[label][kinds_label] = {"seconds": times, "kinds": kind_stats(graph, kinds)}
            print(f"{args.model} {label} {kinds_label}: {min(times):.2f} s (runs {times}, load {os.getloadavg()[0]:.2f})")
        runs[label]["machine_after"] = machine()

    lines = [f"# Group discovery: {args.model}", "",
             "`PYTHONPATH=src python benchmarks/graph_discovery.py`", "",
             "| LoRA | kinds | seconds (runs) | load avg (1 min, before/after) |", "|---|---|---|---|"]
    for label, run in runs.items():
        for kinds_label in ("default_kinds", "all_kinds"):
            lines.append(f"| {label} | {kinds_label} | {run[kinds_label]['seconds']} | "
                         f"{run['machine_before']['load_average'][0]} / {run['machine_after']['load_average'][0]} |")
    for label, run in runs.items():
        lines += ["", f"## Groups per kind ({label})", "",
                  "| kind | groups | prunable | params/group | params (all groups) |", "|---|---|---|---|---|"]
        for kind, st in run["all_kinds"]["kinds"].items():
            per = st["params_per_group"]
            per = "-" if per is None else (str(per[0]) if per[0] == per[1] else f"{per[0]}-{per[1]}")
            lines.append(f"| {kind} | {st['groups']} | {st['prunable']} | {per} | {st['params']:,} |")
    lines += ["", "Parameters include LoRA factors when LoRA is attached (they are part of the group's slices).", ""]
    write_results("graph_discovery", {"model": args.model, "runs": runs}, "\n".join(lines))


if __name__ == "__main__":
    main()
