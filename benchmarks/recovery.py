"""Benchmark of dynamic knowledge recovery: SmolLM2-135M pruned 20%, then recovered four ways.

    dynamic mix vs uniform mix  x  with / without distillation from the dense model,
all with the same token budget. Reported per model (dense, pruned, each recovered one): the
held-out loss per data category (from the recovery logs: categories held out of training), and,
once `lorashear.evaluate` is on main, wiki perplexity and the seven-task zero-shot average.

Real run (CPU trains ~100 tok/s: 4 x 200k tokens is about a day; a GPU takes minutes):
    PYTHONPATH=src python benchmarks/recovery.py --tokens 200000
Dry run (crude pruning, tiny budget, writes recovery_smollm2_dryrun.*):
    PYTHONPATH=src python benchmarks/recovery.py --crude-prune --tokens 2048 --seq-len 128 --eval-sequences 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from lorashear.cli import main as cli_main
from lorashear.models import count_parameters, load_model, load_tokenizer
from lorashear.recover import RecoverConfig, recover

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {  # name -> RecoverConfig overrides
    "dynamic": {"mix": "dynamic", "kd_weight": 0.0},
    "uniform": {"mix": "uniform", "kd_weight": 0.0},
    "dynamic+kd": {"mix": "dynamic", "kd_weight": 0.5},
    "uniform+kd": {"mix": "uniform", "kd_weight": 0.5},
}


def prune(model: str, ratio: float, out: Path, crude: bool) -> str:
    """The pruned model: `lorashear prune --method random --uniform` when available, else (dry run) crude."""
    if importlib.util.find_spec("lorashear.cli.prune_cmd") is not None and not crude:
        code = cli_main(["prune", model, "--method", "random", "--ratio", str(ratio), "--uniform", "--seed", "0",
                         "-o", str(out)])
        if code != 0:
            raise SystemExit(f"lorashear prune failed ({code})")
        return "lorashear prune --method random --uniform --seed 0"
    if not crude:
        raise SystemExit("`lorashear prune` is not on this branch yet; pass --crude-prune for a dry run")
    crude_mlp_prune(model, ratio, out, seed=0)
    return "crude dry-run pruning: random MLP channels, same count per layer (not `lorashear prune`)"


def crude_mlp_prune(model_spec: str, ratio: float, out: Path, seed: int) -> None:
    """Dry-run stand-in: drop a random `ratio` of each layer's MLP channels (plain HF llama shapes)."""
    model = load_model(model_spec, device="cpu")
    g = torch.Generator().manual_seed(seed)
    inner = model.config.intermediate_size
    kept_count = inner - round(inner * ratio)
    for layer in model.model.layers:
        keep = torch.randperm(inner, generator=g)[:kept_count].sort().values
        mlp = layer.mlp
        for name in ("gate_proj", "up_proj"):
            lin = getattr(mlp, name)
            lin.weight = torch.nn.Parameter(lin.weight.data[keep].clone())
            lin.out_features = kept_count
        mlp.down_proj.weight = torch.nn.Parameter(mlp.down_proj.weight.data[:, keep].clone())
        mlp.down_proj.in_features = kept_count
    model.config.intermediate_size = kept_count
    model.save_pretrained(out)
    load_tokenizer(model_spec).save_pretrained(out)


def evaluate_folder(folder: str) -> dict | None:
    """Wiki PPL and the seven-task average of a model folder.

    TODO(lead): wire to `lorashear.evaluate` once it lands on main (its API is not on this branch);
    a perplexity helper must not be duplicated here.
    """
    if importlib.util.find_spec("lorashear.evaluate") is None:
        return None
    return None  # TODO(lead): call lorashear.evaluate here


def held_out_losses(summary: dict) -> dict:
    """Mean over categories of the held-out loss, per stage, plus the per-category values."""
    return {stage: {"mean": sum(v.values()) / len(v), **v} for stage, v in summary.items() if v}


def run(args: argparse.Namespace) -> dict:
    work = Path(args.workdir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    pruned = work / "pruned"
    started = time.time()
    how = prune(args.model, args.ratio, pruned, args.crude_prune)
    dense_params = count_parameters(load_model(args.model, device="cpu"))
    pruned_params = count_parameters(load_model(str(pruned), device="cpu"))
    results: dict = {
        "model": args.model,
        "pruning": how,
        "ratio": args.ratio,
        "parameters": {"dense": dense_params, "pruned": pruned_params},
        "budget_tokens": args.tokens,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
        + ("cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"),
        "variants": {},
        "evaluate": {"dense": evaluate_folder(args.model), "pruned": evaluate_folder(str(pruned))},
    }
    for name, overrides in VARIANTS.items():
        config = RecoverConfig(
            pruned=str(pruned), dense=args.model, out=str(work / name), tokens=args.tokens, seq_len=args.seq_len,
            batch_size=args.batch_size, grad_accum=args.grad_accum, mix_interval=args.mix_interval,
            eval_sequences=args.eval_sequences, checkpoint_every=0, seed=0, **overrides,
        )
        t0 = time.time()
        result = recover(config)
        summary = json.loads((result.out / "recovery.json").read_text())
        mixture = json.loads((result.out / "logs" / "mixture.json").read_text())
        results["variants"][name] = {
            "overrides": overrides,
            "seconds": round(time.time() - t0, 1),
            "tokens_seen": summary["tokens_seen"],
            "held_out_loss_before": held_out_losses({s: r[0]["loss"] for s, r in mixture.items() if r}),
            "held_out_loss_after": held_out_losses(summary["final_losses"]),
            "final_weights": {s: r[-1]["weights"] for s, r in mixture.items() if r},
            "evaluate": evaluate_folder(str(result.out)),
        }
        results["dense_held_out_loss"] = held_out_losses(summary["reference_losses"])
    results["seconds"] = round(time.time() - started, 1)
    return results


def markdown(results: dict, command: str) -> str:
    lines = [
        f"# Recovery benchmark: {results['model']} pruned {results['ratio']:.0%}",
        "",
        f"Command: `{command}`  ",
        f"Pruning: {results['pruning']}  ",
        f"Parameters: dense {results['parameters']['dense']:,}, pruned {results['parameters']['pruned']:,}  ",
        f"Budget: {results['budget_tokens']:,} tokens per recovery run; machine: {results['machine']}",
        "",
        "Held-out loss (nats/token, mean over categories; lower is better). Categories: stage 1 = "
        "c4, code, technical, tiny-stories, multilingual (exllamav2 calibration files, held-out documents); "
        "stage 2 = alpaca-demo held-out responses.",
        "",
        "| model | stage-1 loss | stage-2 loss | seconds |",
        "|---|---|---|---|",
    ]

    def cell(losses: dict, stage: str) -> str:
        return f"{losses[stage]['mean']:.4f}" if stage in losses else "-"

    dense = results.get("dense_held_out_loss", {})
    lines.append(f"| dense | {cell(dense, 'pretrain')} | {cell(dense, 'instruct')} | |")
    before = next(iter(results["variants"].values()))["held_out_loss_before"]
    lines.append(f"| pruned, no recovery | {cell(before, 'pretrain')} | {cell(before, 'instruct')} | |")
    for name, v in results["variants"].items():
        after = v["held_out_loss_after"]
        lines.append(f"| recovered: {name} | {cell(after, 'pretrain')} | {cell(after, 'instruct')} | {v['seconds']} |")
    lines += [
        "",
        "Stage-2 'before' is measured at the start of stage 2 (after stage 1), not on the pruned model.",
        "",
        "Wiki perplexity and the seven-task average: pending `lorashear.evaluate` (TODO: wire in "
        "`evaluate_folder`).",
        "",
        "Final mixture weights (dynamic variants):",
        "",
    ]
    for name, v in results["variants"].items():
        if v["overrides"]["mix"] == "dynamic":
            for stage, weights in v["final_weights"].items():
                shown = ", ".join(f"{k} {w:.3f}" for k, w in weights.items())
                lines.append(f"- {name} / {stage}: {shown}")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--ratio", type=float, default=0.2)
    p.add_argument("--tokens", type=int, default=200_000, help="training tokens per recovery run")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=4)
    p.add_argument("--mix-interval", type=int, default=10)
    p.add_argument("--eval-sequences", type=int, default=8)
    p.add_argument("--crude-prune", action="store_true", help="dry run without `lorashear prune`")
    p.add_argument("--workdir", default="runs/bench-recovery")
    args = p.parse_args()
    results = run(args)
    stem = "recovery_smollm2" + ("_dryrun" if args.crude_prune else "")
    command = "PYTHONPATH=src python benchmarks/recovery.py " + " ".join(sys.argv[1:])
    results["command"] = command
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / f"{stem}.md").write_text(markdown(results, command))
    print(markdown(results, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
