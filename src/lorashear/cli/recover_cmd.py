"""`lorashear recover`: dynamic knowledge recovery of a pruned model (LoRA, two stages, Accelerate)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lorashear.models import DTYPES

# Flags that map one-to-one onto RecoverConfig fields; None (not given) leaves the recipe's value.
_FLAGS = {
    "--seq-len": ("seq_len", int),
    "--batch-size": ("batch_size", int),
    "--grad-accum": ("grad_accum", int),
    "--lr": ("lr", float),
    "--lora-r": ("lora_r", int),
    "--stage-split": ("stage_split", float),
    "--mix-interval": ("mix_interval", int),
    "--kd-weight": ("kd_weight", float),
    "--checkpoint-every": ("checkpoint_every", int),
    "--stop-after-steps": ("stop_after_steps", int),
    "--seed": ("seed", int),
    "--gradient-checkpointing": ("gradient_checkpointing", str),
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "recover",
        help="fine-tune a pruned model with LoRA (pretraining-like text, then instructions) and merge",
        description="Dynamic knowledge recovery. Multi-process: `accelerate launch [--config_file "
        "configs/accelerate/...] -m lorashear recover ...`.",
    )
    p.add_argument("pruned", help="the pruned model (folder, built-in name, .gguf)")
    p.add_argument("-o", "--out", required=True, help="output folder (must not exist)")
    p.add_argument("--dense", help="the dense model: reference losses for the dynamic mix, teacher for --kd-weight")
    p.add_argument("--data", nargs="+", help="stage-1 corpora or files, one category each (comma lists allowed)")
    p.add_argument("--instruct", nargs="+", help="stage-2 Alpaca-format sources, one category each")
    p.add_argument("--tokens", type=int, help="training tokens in all (both stages, all processes)")
    p.add_argument("--mix", choices=("dynamic", "uniform"), help="sampling mix across categories")
    p.add_argument("--dtype", choices=DTYPES, help="both models' weights (default auto: bfloat16 on a CUDA GPU "
                   "that supports it, else float32); LoRA trains in float32")
    for flag, (_, kind) in _FLAGS.items():
        p.add_argument(flag, type=kind)
    p.add_argument("--resume", action="store_true", help="continue the unfinished run of OUT from its last checkpoint")
    p.add_argument("--config", type=Path, help="a YAML recipe, e.g. recipes/recover.yaml (flags override it)")
    p.set_defaults(handler=run)


def _split(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [v for item in values for v in item.split(",") if v]


def run(args: argparse.Namespace) -> int:
    from lorashear.recover import RecoverConfig, recover

    overrides = {
        "pruned": args.pruned,
        "out": args.out,
        "dense": args.dense,
        "data": _split(args.data),
        "instruct": _split(args.instruct),
        "tokens": args.tokens,
        "mix": args.mix,
        "dtype": args.dtype,
        "resume": True if args.resume else None,
        **{field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _) in _FLAGS.items()},
    }
    if args.config is not None:
        config = RecoverConfig.from_yaml(args.config, **overrides)
    else:
        config = RecoverConfig.from_dict({k: v for k, v in overrides.items() if v is not None})
    result = recover(config)
    if result.finished:
        print(f"recovered model written to {result.out} ({result.steps} steps, {result.tokens_seen:,} tokens)")
    return 0
