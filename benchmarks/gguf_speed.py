"""llama.cpp speed of the default model's GGUF exports: dense vs 20%/50% pruned (uniform and not), f16 and q4_k_m.

    PYTHONPATH=src python benchmarks/gguf_speed.py --workdir /tmp/gguf-speed [--ratios 0.2,0.5]
        [--layouts uniform,non-uniform] [--formats f16,q4_k_m] [--rounds 5] [--threads 2] [--multiple-of 64]
        [--no-repack] [--folder "LABEL=PATH" ...]

What a laptop user gets: `lorashear prune --method random` (speed depends on the shapes, not on which groups
went), or `--folder LABEL=PATH` an exported folder of a real run (rows `LABEL f16`, ...: the shapes a recipe
really makes), `lorashear export-gguf`, then llama.cpp (llama-cpp-python) times a 512-token prefill and a 128-token
greedy decode through its KV cache, batch 1. Each pruned row is timed side by side with the dense file of the
same format, alternating within every round (dense, pruned, dense, ...), so each round's ratio sees one machine
load; ratios are the median (min–max) over rounds. `--no-repack` times llama.cpp without its repacked weight
buffers (README, known limitations: they crashed it on an AMX CPU); each row records which way it ran. Every
finished row is written at once (resumable): the JSON and its Markdown table in
benchmarks/results/gguf_speed_<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import GGUF_DECODE, GGUF_PREFILL, RESULTS, command_line
from render import gguf_speed_markdown, write_results

from lorashear.compress.core import count_params
from lorashear.data import load_documents
from lorashear.deploy import export_gguf, open_gguf
from lorashear.evaluate.speed import Spread, machine_state
from lorashear.models import load_model, load_tokenizer
from lorashear.prune.api import PruneConfig, prune_model


def rounded(multiple_of: int, sep: str) -> str:
    """The name part of rows/folders pruned with --multiple-of N (empty when N is 1)."""
    return f"{sep}m{multiple_of}" if multiple_of > 1 else ""


def row_key(ratio: float, layout: str, fmt: str, multiple_of: int = 1) -> str:
    """`dense f16`, `20% uniform q4_k_m`, or with `--multiple-of 64` `20% uniform m64 f16`."""
    if ratio == 0:
        return "dense " + fmt
    return f"{round(ratio * 100)}% {layout}{rounded(multiple_of, ' ')} {fmt}"


def folder_for(model: str, ratio: float, layout: str, workdir: Path, multiple_of: int = 1) -> str:
    """The HF folder of a row: the model itself, or its random prune (made once; kept channel counts a
    multiple of `multiple_of`, the kernels' friendly widths)."""
    if ratio == 0:
        return model
    folder = workdir / f"pruned-{round(ratio * 100)}-{layout}{rounded(multiple_of, '-')}"
    if not (folder / "config.json").is_file():
        prune_model(PruneConfig(model, str(folder), ratio=ratio, uniform=layout == "uniform", overwrite=True,
                                multiple_of=multiple_of), log=lambda _: None)
    return str(folder)


def parse_folder(item: str) -> tuple[str, str]:
    """`--folder "20% lhspg-auto-m64 seed=1=PATH"` -> (label, path): the label is everything before the last `=`."""
    label, sep, path = item.rpartition("=")
    if not sep or not label or not (Path(path) / "config.json").is_file():
        raise SystemExit(f"--folder takes LABEL=PATH, PATH a model folder with config.json; got {item!r}")
    return label, path


def gguf_for(model: str, folder: str, key: str, fmt: str, workdir: Path) -> Path:
    """The row's GGUF file (exported once): f16, or quantized by llama.cpp from f16."""
    path = workdir / (key.replace("%", "").replace(" ", "-") + ".gguf")
    if not path.is_file():
        export_gguf(folder, path, dtype="f16", quant=None if fmt == "f16" else fmt)
    return path


def prompt_ids(model: str) -> list[int]:
    tokenizer = load_tokenizer(model)
    text = "\n\n".join(load_documents("c4")[:50])
    return tokenizer(text, add_special_tokens=False).input_ids[:GGUF_PREFILL]


def next_token(llm) -> int:
    """Greedy choice from the last position's logits (kept by llama.cpp; the binding keeps none without logits_all)."""
    logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
    return int(np.argmax(logits))


def time_once(llm, ids: list[int]) -> dict[str, float]:
    """Prefill tok/s of `ids`, then greedy decode tok/s of GGUF_DECODE new tokens through the KV cache."""
    llm.reset()
    start = time.perf_counter()
    llm.eval(ids)
    prefill = len(ids) / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(GGUF_DECODE):
        llm.eval([next_token(llm)])
    return {"prefill": prefill, "decode": GGUF_DECODE / (time.perf_counter() - start)}


def time_side_by_side(files: dict[str, Path], ids: list[int], rounds: int, threads: int,
                      repack: bool = True) -> tuple[dict, list]:
    """tok/s of every file in every round (after one warm-up round), the files alternated within each round."""
    models = {name: open_gguf(path, repack=repack, n_ctx=GGUF_PREFILL + GGUF_DECODE + 8, n_batch=GGUF_PREFILL,
                              n_threads=threads, n_threads_batch=threads, verbose=False) for name, path in files.items()}
    per_round: dict[str, list[dict]] = {name: [] for name in files}
    load = [os.getloadavg()[0]]
    for r in range(rounds + 1):
        for name, llm in models.items():
            figures = time_once(llm, ids)
            if r:
                per_round[name].append(figures)
        load.append(os.getloadavg()[0])
    return per_round, load


def describe_machine(load: list[float], threads: int) -> str:
    m = machine_state(torch.device("cpu"), load)
    busy = " (busy: more runnable jobs than cores, figures are noise)" if m.busy else ""
    return (f"{m.device_name}, {m.cpu_count} cores, {threads} llama.cpp threads, "
            f"load average {min(load):.1f}–{max(load):.1f}{busy}")


def summarize(rounds: list[dict], reference: list[dict] | None) -> dict:
    out = {}
    for metric in ("prefill", "decode"):
        out[metric] = Spread.of([r[metric] for r in rounds]).__dict__
        if reference is not None:
            ratios = [a[metric] / b[metric] for a, b in zip(rounds, reference, strict=True)]
            out[f"{metric}_vs_dense"] = Spread.of(ratios).__dict__
    return out


def arch_of(path: Path) -> str:
    """The GGUF architecture a file declares."""
    import gguf

    return gguf.GGUFReader(path).fields["general.architecture"].contents()


def save(results: dict, stem: str) -> None:
    write_results(stem, results, gguf_speed_markdown(results))


def main() -> int:
    import llama_cpp

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="where the pruned folders and GGUF files go")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--name", default="smollm2")
    parser.add_argument("--ratios", default="0.2,0.5")
    parser.add_argument("--layouts", default="uniform,non-uniform")
    parser.add_argument("--formats", default="f16,q4_k_m")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--multiple-of", type=int, default=1, help="pruned rows keep channel counts a multiple "
                        "of this (lorashear prune --multiple-of); their rows are named `… mN …`")
    parser.add_argument("--no-repack", dest="repack", action="store_false", help="llama.cpp without its "
                        "repacked weight buffers (its own tools' --no-repack): for CPUs where repacking crashes it")
    parser.add_argument("--folder", action="append", default=[], metavar="LABEL=PATH",
                        help="time this exported folder (rows `LABEL FORMAT`) instead of random prunes by "
                             "--ratios/--layouts (repeatable)")
    args = parser.parse_args()
    folders = dict(parse_folder(item) for item in args.folder)
    args.workdir.mkdir(parents=True, exist_ok=True)
    stem = f"gguf_speed_{args.name}"
    path = RESULTS / f"{stem}.json"
    results = json.loads(path.read_text()) if path.exists() else {"model": args.model, "rows": {}}
    command = command_line()
    results.update(command=results.get("command", command), llama_cpp=llama_cpp.__version__)
    if command != results["command"] and command not in results.setdefault("more_commands", []):
        results["more_commands"].append(command)  # rows added by another invocation (e.g. --multiple-of 64)
    ids = prompt_ids(args.model)
    formats = args.formats.split(",")
    rows = [(0.0, "", f, None) for f in formats]
    if folders:
        rows += [(None, label, f, path) for f in formats for label, path in folders.items()]
    else:
        rows += [(float(r), lay, f, None) for f in formats for r in args.ratios.split(",")
                 for lay in args.layouts.split(",")]
    for ratio, layout, fmt, given in rows:
        key = f"{layout} {fmt}" if given else row_key(ratio, layout, fmt, args.multiple_of)
        if key in results["rows"]:
            continue
        print(f"[{key}] preparing", flush=True)
        folder = given or folder_for(args.model, ratio, layout, args.workdir, args.multiple_of)
        pruned = given is not None or ratio != 0
        files = {"dense": gguf_for(args.model, args.model, row_key(0, "", fmt), fmt, args.workdir)}
        if pruned:
            files[key] = gguf_for(args.model, folder, key, fmt, args.workdir)
        per_round, load = time_side_by_side(files, ids, args.rounds, args.threads, args.repack)
        mine = per_round[key if pruned else "dense"]
        timed = files[key if pruned else "dense"]
        results["rows"][key] = {
            "arch": arch_of(timed), "params": count_params(load_model(folder, device="cpu")),
            "file_mb": timed.stat().st_size / 2**20,
            "speed": summarize(mine, per_round["dense"] if pruned else None),
            "rounds": per_round, "threads": args.threads, "repack": args.repack,
            "machine": describe_machine(load, args.threads),
        }
        save(results, stem)
        print(f"[{key}] {json.dumps(results['rows'][key]['speed'])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
