"""Compress and export a real model (default: SmolLM2-135M): 20% random, uniform (plain folder) and not (remote code).

    PYTHONPATH=src python benchmarks/compress_export.py [--model smollm2-135m] [--ratio 0.2]

For each: plan, compress time, export time, params before/after, reload with stock transformers
(`from_pretrained`, with `trust_remote_code=True` where layers differ), logits vs the in-memory
pruned model, generation with KV cache == without, and a greedy completion. Random pruning
without recovery is expected to damage the completion; the point is that the folder loads and runs.
Writes benchmarks/results/compress_export.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from _common import machine
from render import write_results
from transformers import AutoModelForCausalLM

from lorashear.compress import compress, count_params, export
from lorashear.graph import DEFAULT_KINDS, build_graph
from lorashear.models import DEFAULT_MODEL, load_model, load_tokenizer
from lorashear.prune import random_plan
from lorashear.prune.api import tied_aliases

PROMPT = "The capital of France is"


def complete(model, tokenizer, new_tokens: int = 8) -> tuple[str, torch.Tensor]:
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, use_cache=True)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True), out


def folder_mb(folder: Path) -> float:
    return round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20, 1)


def run_one(model, tokenizer, graph, ratio: float, uniform: bool, seed: int, workdir: Path) -> dict:
    kinds = list(DEFAULT_KINDS)
    plan = random_plan(graph, ratio, kinds, uniform=uniform, seed=seed, aliases=tied_aliases(model))
    pruned = copy.deepcopy(model)
    params_before = count_params(pruned)
    start = time.perf_counter()
    compress(pruned, plan.groups)
    compress_s = time.perf_counter() - start
    start = time.perf_counter()
    folder = export(pruned, tokenizer, workdir / ("uniform" if uniform else "non_uniform"), plan.groups, params_before)
    export_s = time.perf_counter() - start
    plain = not (folder / "modeling_lorashear.py").exists()
    start = time.perf_counter()
    reloaded = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=not plain).eval()
    load_s = time.perf_counter() - start
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        delta = (reloaded(ids).logits - pruned(ids).logits).abs().max().item()
    text, cached = complete(reloaded, tokenizer)
    uncached = reloaded.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False)
    result = {
        "uniform": uniform,
        "plain_folder": plain,
        "loaded_with": "from_pretrained" if plain else "from_pretrained(trust_remote_code=True)",
        "groups_removed": {k: sum(g.kind == k for g in plan.groups) for k in kinds},
        "params_before": params_before,
        "params_after": count_params(reloaded),
        "achieved_ratio": round(1 - count_params(reloaded) / params_before, 4),
        "compress_s": round(compress_s, 2),
        "export_s": round(export_s, 2),
        "load_s": round(load_s, 2),
        "folder_mb": folder_mb(folder),
        "max_abs_logit_delta_vs_in_memory": delta,
        "cache_equals_no_cache": bool(torch.equal(cached, uncached)),
        "completion": text,
        "load_average": round(os.getloadavg()[0], 2),
    }
    print({k: v for k, v in result.items()})
    shutil.rmtree(folder)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    before = machine()
    model = load_model(args.model, device="cpu")
    tokenizer = load_tokenizer(args.model)
    dense_text, _ = complete(model, tokenizer)
    print(f"dense: {PROMPT!r} -> {dense_text!r}")
    start = time.perf_counter()
    graph = build_graph(model, kinds=DEFAULT_KINDS)
    discovery_s = round(time.perf_counter() - start, 2)
    with tempfile.TemporaryDirectory(prefix="lorashear-bench-") as tmp:
        runs = [run_one(model, tokenizer, graph, args.ratio, uniform, args.seed, Path(tmp)) for uniform in (True, False)]
    data = {"model": args.model, "ratio": args.ratio, "seed": args.seed, "kinds": list(DEFAULT_KINDS),
            "discovery_s": discovery_s, "dense_completion": dense_text, "runs": runs,
            "machine_before": before, "machine_after": machine()}

    lines = [f"# Compress and export: {args.model}, random {args.ratio:.0%} of parameters ({', '.join(DEFAULT_KINDS)})",
             "", "`PYTHONPATH=src python benchmarks/compress_export.py`", "",
             f"Discovery (default kinds, no LoRA): {discovery_s} s. Load average (1 min) before/after: "
             f"{before['load_average'][0]} / {data['machine_after']['load_average'][0]}.", "",
             f"Dense greedy completion of \"{PROMPT}\": {json.dumps(dense_text)}", "",
             "| layers | folder | params before → after (ratio) | compress s | export s | load s | max abs Δ logits | cache == no cache | completion |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(
            f"| {'uniform' if r['uniform'] else 'non-uniform'} | {r['loaded_with']} | {r['params_before']:,} → "
            f"{r['params_after']:,} ({r['achieved_ratio']:.2%}) | {r['compress_s']} | {r['export_s']} | {r['load_s']} | "
            f"{r['max_abs_logit_delta_vs_in_memory']:.1e} | {r['cache_equals_no_cache']} | {json.dumps(r['completion'])} |")
    lines += ["", "Random groups, no recovery: the completion only shows that the exported folder loads and generates.", ""]
    write_results("compress_export", data, "\n".join(lines))


if __name__ == "__main__":
    main()
