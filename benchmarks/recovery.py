"""Benchmark of dynamic knowledge recovery: SmolLM2-135M pruned, then recovered several ways.

The model is pruned once with `lorashear prune` (random groups, uniform per layer: a floor), or an
existing pruned folder is given (`--pruned`, e.g. an LHSPG run's 03-prune/model), then recovered with
the same token budget as: dynamic mix, uniform mix,
dynamic mix + distillation, uniform mix + distillation, and the dynamic mix with the whole budget on
pretraining-like text (no instruction stage) (`--variants`). Every model (pruned, each
recovered one) is scored by `lorashear.evaluate`: wiki perplexity and the seven zero-shot tasks;
the dense model's perplexity is measured for reference. Also reported: the held-out loss per data
category from the recovery logs. Results are rewritten after every model, and a rerun with the same
settings resumes: what is in the results file is kept, the rest (a stopped variant from its start) runs.

    PYTHONPATH=src python benchmarks/recovery.py --tokens 16384 --seq-len 256 --batch-size 4 \
        --grad-accum 1 --mix-interval 2 --eval-sequences 4 --ppl-windows 32 --limit 50
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
from _common import RANDOM_PRUNING_NOTE, RESULTS, command_line, results_lock
from render import recovery_markdown, write_results

from lorashear.cli import main as cli_main
from lorashear.data import ZERO_SHOT_TASKS
from lorashear.evaluate import evaluate
from lorashear.io import write_atomic
from lorashear.models import count_parameters, load_model, load_tokenizer
from lorashear.recover import RecoverConfig, recover

VARIANTS = {  # name -> RecoverConfig overrides
    "dynamic": {"mix": "dynamic", "kd_weight": 0.0},
    "uniform": {"mix": "uniform", "kd_weight": 0.0},
    "dynamic+kd": {"mix": "dynamic", "kd_weight": 0.5},
    "uniform+kd": {"mix": "uniform", "kd_weight": 0.5},
    # the whole budget on pretraining-like text: what the instruction stage costs (or buys) in wiki PPL and tasks
    "dynamic-stage1": {"mix": "dynamic", "kd_weight": 0.0, "stage_split": 1.0},
}
ISSUE_VARIANTS = ("dynamic", "uniform", "dynamic+kd", "uniform+kd")  # the recovery issue's comparison
RESUME_IGNORES = ("workdir", "variants")  # settings a resumed run may change


def prune(model: str, ratio: float, seed: int, out: Path) -> list[str]:
    """Prune through the `lorashear prune` command path; returns its argument list."""
    argv = ["prune", model, "--method", "random", "--ratio", str(ratio), "--uniform", "--seed", str(seed),
            "-o", str(out)]
    if cli_main(argv) != 0:
        raise SystemExit("lorashear prune failed")
    return argv


def evaluate_folder(folder: str, args: argparse.Namespace) -> dict:
    """`lorashear.evaluate` on a model folder: wiki PPL and the seven zero-shot tasks."""
    started = time.time()
    model = load_model(folder, device="cpu")
    result = evaluate(
        model, load_tokenizer(folder), ppl_windows=args.ppl_windows, tasks=ZERO_SHOT_TASKS,
        limit=args.limit, batch_size=args.eval_batch_size, model_name=folder,
    )
    del model
    gc.collect()
    return {**result.to_dict(), "eval_seconds": round(time.time() - started, 1)}


def held_out_losses(summary: dict) -> dict:
    """Mean over categories of the held-out loss, per stage, plus the per-category values."""
    return {stage: {"mean": sum(v.values()) / len(v), **v} for stage, v in summary.items() if v}


def given_pruning(folder: Path) -> dict:
    """What `--pruned FOLDER`'s pruning.json says: method, ratio and knowledge rule (the folder is not pruned here)."""
    record = json.loads((folder / "pruning.json").read_text())
    rule = (record.get("knowledge") or {}).get("rule", "none")
    return {"command": f"an existing folder ({folder.name}): {record['method']}, ratio {record['ratio']}, "
                       f"knowledge rule {rule}",
            "note": f"{record['method']} pruning with the {rule} knowledge rule", "ratio": record["ratio"]}


def recover_variant(name: str, pruned: Path, work: Path, args: argparse.Namespace) -> dict:
    """One recovery run with the benchmark's budget; what it trained on and the held-out losses."""
    overrides = VARIANTS[name]
    config = RecoverConfig(
        pruned=str(pruned), dense=args.model, out=str(work / name), tokens=args.tokens, seq_len=args.seq_len,
        batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr, mix_interval=args.mix_interval,
        eval_sequences=args.eval_sequences, checkpoint_every=0, seed=args.seed, **overrides,
    )
    started = time.time()
    result = recover(config)
    summary = json.loads((result.out / "recovery.json").read_text())
    mixture = json.loads((result.out / "logs" / "mixture.json").read_text())
    return {
        "overrides": overrides,
        "train_seconds": round(time.time() - started, 1),
        "tokens_seen": summary["tokens_seen"],
        "steps": summary["steps"],
        "mixture_updates": {s: len(r) for s, r in mixture.items()},
        "held_out_loss_before": held_out_losses({s: r[0]["loss"] for s, r in mixture.items() if r}),
        "held_out_loss_after": held_out_losses(summary["final_losses"]),
        "dense_held_out_loss": held_out_losses(summary["reference_losses"]),
        "final_weights": {s: r[-1]["weights"] for s, r in mixture.items() if r},
        "folder": str(result.out),
    }


def earlier_results(args: argparse.Namespace) -> dict | None:
    """The results file of an earlier run with the same settings (it resumes), or None (a fresh run)."""
    path = RESULTS / f"{args.stem}.json"
    if not path.is_file():
        return None
    earlier = json.loads(path.read_text())
    same = all(earlier["settings"].get(k) == v for k, v in vars(args).items() if k not in RESUME_IGNORES)
    return earlier if same else None


def run(args: argparse.Namespace, command: str) -> dict:
    work = Path(args.workdir)
    results = earlier_results(args)
    if results is None and work.exists():
        shutil.rmtree(work)  # another run's folder: start clean
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if args.pruned:
        pruned, pruning = Path(args.pruned), given_pruning(Path(args.pruned))
    elif (work / "pruned" / "pruning.json").is_file():  # `lorashear prune` renames its folder into place when done
        pruned, pruning = work / "pruned", (results or {}).get("pruning")
    else:
        pruned = work / "pruned"
        prune_argv = prune(args.model, args.ratio, args.seed, pruned)
        pruning = {"command": "lorashear " + " ".join(prune_argv[:-2]), "note": RANDOM_PRUNING_NOTE}
    if results is not None and pruning is not None:
        print(f"resuming {args.stem}: kept {', '.join(results['variants']) or 'no variants'}", flush=True)
        results.update(command=command, load_average_start=results.get("load_average_start"),
                       invocations=results.get("invocations", 1) + 1)
        return finish(results, pruned, work, args, started)
    results = {
        "command": command,
        "model": args.model,
        "pruning": pruning,
        "ratio": pruning.get("ratio", args.ratio),
        "parameters": {
            "dense": count_parameters(load_model(args.model, device="cpu")),
            "pruned": count_parameters(load_model(str(pruned), device="cpu")),
        },
        "settings": {k: v for k, v in vars(args).items() if k != "workdir"},
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
        + ("cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"),
        "load_average_start": os.getloadavg(),
        "dense": evaluate_folder(args.model, args),
        "pruned": None,
        "variants": {},
    }
    save(results)
    return finish(results, pruned, work, args, started)


def finish(results: dict, pruned: Path, work: Path, args: argparse.Namespace, started: float) -> dict:
    """Score the pruned folder and run each variant not in `results` yet, saving after each. The wall time
    adds this invocation's to the earlier ones' (as saved after their last finished variant)."""
    earlier_seconds = results.get("seconds", 0.0)
    if results.get("pruned") is None:
        results["pruned"] = evaluate_folder(str(pruned), args)
        save(results)
    for name in args.variants:
        if name in merge_saved(results)["variants"]:  # done here, or by an `--add-to` run alongside
            continue
        if (work / name).exists():  # a variant stopped midway restarts (it keeps no checkpoints)
            shutil.rmtree(work / name)
        variant = recover_variant(name, pruned, work, args)
        variant["evaluate"] = evaluate_folder(variant["folder"], args)
        results["variants"][name] = variant
        results["seconds"] = round(earlier_seconds + time.time() - started, 1)
        results["load_average_end"] = os.getloadavg()
        merge_saved(results, write=True)
    return results


def merge_saved(results: dict, write: bool = False) -> dict:
    """Take in the variants another process (`--add-to`, run alongside) saved to the results file meanwhile;
    with `write`, save the merged results under the same lock, so neither process drops the other's."""
    stem = results["settings"]["stem"]
    path = RESULTS / f"{stem}.json"
    with results_lock(stem):
        if path.is_file():
            results["variants"] = {**json.loads(path.read_text())["variants"], **results["variants"]}
        if write:
            save(results)
    return results


def add_variants(args: argparse.Namespace, command: str) -> dict:
    """More variants against an earlier run's pruned model (`--add-to PRUNED`), merged into its results file."""
    path = RESULTS / f"{args.stem}.json"
    earlier = json.loads(path.read_text())
    ignored = {"variants", "workdir", "add_to"}
    differ = sorted(k for k, v in vars(args).items() if k not in ignored and earlier["settings"].get(k) != v)
    if differ:
        raise SystemExit(f"--add-to needs the earlier run's settings; these differ: {', '.join(differ)}")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    for name in args.variants:
        variant = recover_variant(name, Path(args.add_to), work, args)
        variant["evaluate"] = evaluate_folder(variant["folder"], args)
        variant["command"] = command
        write_atomic(work / f"variant_{name}.json", json.dumps(variant, indent=2))
        with results_lock(args.stem):
            results = json.loads(path.read_text())  # re-read: the earlier run may still be adding variants
            results["variants"][name] = variant
            results["load_average_end"] = os.getloadavg()
            save(results)
    return results


def save(results: dict) -> None:
    """RESULTS/STEM.json and .md, and BENCHMARKS.md kept in step (`write_results`, as every benchmark)."""
    write_results(results["settings"]["stem"], results, recovery_markdown(results))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--ratio", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--tokens", type=int, default=16384, help="training tokens per recovery run")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--mix-interval", type=int, default=2)
    p.add_argument("--eval-sequences", type=int, default=4, help="held-out sequences per category per mix update")
    p.add_argument("--ppl-windows", type=int, default=32)
    p.add_argument("--limit", type=int, default=50, help="docs per zero-shot task")
    p.add_argument("--eval-batch-size", type=int, default=4)
    p.add_argument("--workdir", default="runs/bench-recovery")
    p.add_argument("--stem", default="recovery_smollm2", help="results file name under benchmarks/results/")
    p.add_argument("--pruned", metavar="FOLDER", help="recover this pruned folder (e.g. an LHSPG run's "
                   "03-prune/model) instead of pruning randomly here; --ratio is then the folder's")
    p.add_argument("--add-to", metavar="PRUNED", help="run --variants on an earlier run's pruned folder, merging "
                   "them into its results (same settings)")
    args = p.parse_args()
    command = command_line()
    results = add_variants(args, command.strip()) if args.add_to else run(args, command.strip())
    print(recovery_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
