"""The larger built-in models (Gemma 3 270M, Qwen2.5-Coder-0.5B): discovery, 20% prunes, exported == zeroed, PPL.

Per model: group discovery time (default kinds and all kinds) and groups per kind; the dense wiki PPL;
then 20% magnitude prunes (no knowledge analysis: `--unprunable none`) of kv_group + query_head +
mlp_channel, uniform and not, and of hidden channels, uniform, exported exact (remote code where the
norms' eps differ) and with `--norm-eps stock` (a plain folder keeping the original eps). Per prune:
plain folder or remote code, parameters, seconds per stage, max |Δ logits| of the exported folder
against the dense model with the same groups zeroed (the oracle, on a real model), and its wiki PPL.
Each finished row is written at once; a rerun resumes.

    PYTHONPATH=src python benchmarks/real_models.py --workdir /tmp/real-models \
        [--models gemma3-270m,qwen2.5-coder-0.5b] [--ppl-windows 16]
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from _common import RESULTS, command_line, machine
from render import command_text, write_results

from lorashear.compress import zeroed
from lorashear.compress.export import stock_eps_scale
from lorashear.evaluate.perplexity import corpus_windows, perplexity
from lorashear.graph import DEFAULT_KINDS, GROUP_KINDS, build_graph
from lorashear.graph.summary import kind_stats
from lorashear.knowledge.analysis import KnowledgeConfig
from lorashear.models import count_parameters, load_model, load_tokenizer
from lorashear.prune.api import PruneConfig, prune_model
from lorashear.pruned.modeling_lorashear import is_rms_norm, norm_eps_attr

MODELS = ("gemma3-270m", "qwen2.5-coder-0.5b")
STEM = "real_models"
HEADS_AND_MLP = ("kv_group", "query_head", "mlp_channel")
# Row name -> (kinds, uniform, norm_eps).
PRUNES = {
    "uniform": (HEADS_AND_MLP, True, "exact"),
    "non-uniform": (HEADS_AND_MLP, False, "exact"),
    "uniform hidden, exact eps": (("hidden_channel",), True, "exact"),
    "uniform hidden, stock eps": (("hidden_channel",), True, "stock"),
}
PROBE_WINDOWS, PROBE_LEN = 2, 128  # the oracle's input: the first wiki windows


def discovery(model) -> dict:
    """Seconds to build the graph (default kinds, all kinds) and the groups per kind."""
    out = {}
    for label, kinds in (("default_kinds", DEFAULT_KINDS), ("all_kinds", GROUP_KINDS)):
        start = time.perf_counter()
        graph = build_graph(model, kinds=kinds)
        out[label] = {"seconds": round(time.perf_counter() - start, 2), "kinds": kind_stats(graph, kinds)}
    out["unprunable"] = sorted({g.unprunable for g in graph.groups if g.unprunable})
    return out


def ppl_of(model, tokenizer, windows: int) -> dict:
    start = time.perf_counter()
    result = perplexity(model, tokenizer, "wiki", windows=windows)
    return {"ppl": round(result.ppl, 3), "windows": windows, "convention": result.describe(),
            "seconds": round(time.perf_counter() - start, 1)}


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits.float()


def largest_norm_scale(model, ids: torch.Tensor, eps: float, ratio: float) -> dict:
    """The largest `stock_eps_scale` that the hidden-width RMSNorms of a stock-eps folder apply on `ids`: the
    stated bound, measured (every such norm lost the same channels, d/d′ = `ratio`)."""
    hidden = model.config.hidden_size
    worst = {"scale": 1.0, "norm": None}

    def hook(module, args, out, name):
        mean_square = args[0].float().pow(2).mean(-1).min().item() / ratio  # over the d original channels
        scale = stock_eps_scale(eps, ratio, mean_square)
        if scale > worst["scale"]:
            worst.update(scale=scale, norm=name, mean_square=mean_square)

    handles = [m.register_forward_hook(lambda m, a, o, n=n: hook(m, a, o, n)) for n, m in model.named_modules()
               if is_rms_norm(m) and norm_eps_attr(m) and m.weight.shape[0] == hidden]
    logits(model, ids)
    for h in handles:
        h.remove()
    return worst


def prune_row(name: str, dense, tokenizer, kinds, uniform: bool, norm_eps: str, folder: Path, windows: int) -> dict:
    """Prune with magnitude (20%), export, and check the folder against the zeroed dense model."""
    config = PruneConfig(model=name, output=str(folder), method="magnitude", ratio=0.2, kinds=kinds, uniform=uniform,
                         knowledge=KnowledgeConfig(rule="none"), norm_eps=norm_eps, overwrite=True)
    result = prune_model(config, log=lambda msg: print(f"  {msg}", flush=True))
    gc.collect()
    record = json.loads((folder / "pruning.json").read_text())
    ids = corpus_windows("wiki", tokenizer, PROBE_WINDOWS, PROBE_LEN)
    with zeroed(dense, result.plan.groups):
        want = logits(dense, ids)
    pruned = load_model(str(folder), device="cpu")
    delta = (logits(pruned, ids) - want).abs().max().item()
    if record["norm_eps"]["mode"] == "stock":
        eps = record["norm_eps"]
        eps["largest_scale_on_probe"] = largest_norm_scale(pruned, ids, eps["rms_norm_eps"], eps["max_channel_ratio"])
    row = {
        "command": f"lorashear prune {name} --method magnitude --ratio 0.2 --unprunable none --structures "
                   f"{','.join(kinds)}{' --uniform' if uniform else ''}{' --norm-eps stock' if norm_eps == 'stock' else ''}",
        "plain": record["plain"],
        "norm_eps": record["norm_eps"],
        "params_before": record["params_before"],
        "params_after": record["params_after"],
        "achieved_ratio": round(1 - record["params_after"] / record["params_before"], 4),
        "groups_removed": {k: sum(g.kind == k for g in result.plan.groups) for k in kinds},
        "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
        "max_abs_logit_delta_vs_zeroed": delta,
        "max_abs_logit": want.abs().max().item(),
        "ppl": ppl_of(pruned, tokenizer, windows),
        "load_average": round(machine()["load_average"][0], 2),
    }
    del pruned
    gc.collect()
    return row


def markdown(results: dict) -> str:
    lines = ["# The larger built-in models: discovery, 20% prunes, exported == zeroed, PPL", "",
             f"Command: `{command_text(results['command'])}`", "",
             f"Machine: {results['machine']}. PPL: wiki (2,349 Wikipedia articles from the exllamav2 wheel, "
             "not WikiText-2), first windows of 512 tokens. Magnitude pruning (L2 norm of each group), no "
             "knowledge analysis, no recovery: the PPLs show the damage one-shot pruning does, not what "
             "lorashear's methods reach. Δ logits: max |exported folder − dense model with the same groups "
             f"zeroed| on {PROBE_WINDOWS} × {PROBE_LEN} wiki tokens.", ""]
    for name, model in results["models"].items():
        disc = model.get("discovery", {})
        lines += [f"## {name}", ""]
        if disc:
            lines += [f"Discovery: {disc['default_kinds']['seconds']} s (default kinds), "
                      f"{disc['all_kinds']['seconds']} s (all kinds). Unprunable: "
                      f"{'; '.join(disc['unprunable']) or 'none'}.", "",
                      "| kind | groups | prunable | params/group | params (all groups) |", "|---|---:|---:|---:|---:|"]
            for kind, st in disc["all_kinds"]["kinds"].items():
                low, high = st["params_per_group"] or (0, 0)
                lines.append(f"| {kind} | {st['groups']:,} | {st['prunable']:,} | "
                             f"{low:,}{'' if low == high else f'–{high:,}'} | {st['params']:,} |")
            lines.append("")
        lines += ["| prune (20%) | folder | params | removed | Δ logits (max \\|logit\\|) | wiki PPL | "
                  "prune s (discover/plan/compress/export) |", "|---|---|---:|---|---:|---:|---|"]
        dense = model.get("dense")
        if dense:
            lines.append(f"| dense | — | {dense['params']:,} | — | — | {dense['ppl']['ppl']:,.2f} | — |")
        for key, row in model.get("prunes", {}).items():
            folder = "plain" if row["plain"] else "remote code"
            eps = row["norm_eps"]
            if eps["mode"] == "stock":
                largest = eps.get("largest_scale_on_probe", {}).get("scale")
                folder += (f" (stock eps: {eps['norms_changed']} norms scale their output by ≤ "
                           f"{eps['max_channel_ratio'] ** 0.5:.4f}" + (f", at most {largest:.4f} here" if largest else "") + ")")
            removed = ", ".join(f"{k} {n:,}" for k, n in row["groups_removed"].items())
            s = row["seconds"]
            steps = "/".join(str(round(s.get(k, 0), 1)) for k in ("discover", "plan", "compress", "export"))
            lines.append(f"| {key} | {folder} | {row['params_after']:,} ({row['achieved_ratio']:.2%}) | {removed} | "
                         f"{row['max_abs_logit_delta_vs_zeroed']:.1e} ({row['max_abs_logit']:.1f}) | "
                         f"{row['ppl']['ppl']:,.2f} | {steps} |")
        skipped = model.get("skipped", {})
        lines += [f"\n{k}: {v}" for k, v in skipped.items()]
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="where the pruned folders go (removed after each row)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--ppl-windows", type=int, default=16)
    args = parser.parse_args()
    path = RESULTS / f"{STEM}.json"
    results = json.loads(path.read_text()) if path.exists() else {"models": {}}
    m = machine()
    results.update(command=command_line(),
                   machine=f"{m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch thread(s), torch {torch.__version__}")

    def save() -> None:
        write_results(STEM, results, markdown(results))

    for name in args.models.split(","):
        model = results["models"].setdefault(name, {})
        dense, tokenizer = load_model(name, device="cpu"), load_tokenizer(name)
        if "discovery" not in model:
            print(f"[{name}] discovery", flush=True)
            model["discovery"] = {**discovery(dense), "load_average": m["load_average"][0]}
            save()
        if "dense" not in model:
            print(f"[{name}] dense PPL", flush=True)
            model["dense"] = {"params": count_parameters(dense), "ppl": ppl_of(dense, tokenizer, args.ppl_windows)}
            save()
        prunes = model.setdefault("prunes", {})
        for key, (kinds, uniform, norm_eps) in PRUNES.items():
            exact = prunes.get(key.replace("stock", "exact"))
            if key in prunes or (norm_eps == "stock" and exact and exact["plain"]):
                if norm_eps == "stock" and exact and exact["plain"]:
                    model.setdefault("skipped", {})[key] = "the exact export is plain already (no per-head norms)"
                continue
            print(f"[{name}] {key}", flush=True)
            folder = args.workdir / name / key.replace(" ", "-").replace(",", "")
            prunes[key] = prune_row(name, dense, tokenizer, kinds, uniform, norm_eps, folder, args.ppl_windows)
            shutil.rmtree(folder, ignore_errors=True)
            save()
            print(f"[{name}] {key}: {json.dumps(prunes[key])[:300]}", flush=True)
        save()
        del dense
        gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
