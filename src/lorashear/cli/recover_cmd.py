"""`lorashear recover`: dynamic knowledge recovery of a pruned model (LoRA, two stages, Accelerate)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lorashear.cli.options import TRAINING_FLAGS
from lorashear.models import DTYPES
from lorashear.recover import RecoverConfig, recover

# Flags that map one-to-one onto RecoverConfig fields (flag: field, type, help); None (not given) leaves the
# recipe's value. The loop options read as the trained pruners' do; the help shows RecoverConfig's defaults.
_FLAGS = {
    "--seq-len": ("seq_len", int, "tokens per sequence"),
    "--batch-size": ("batch_size", int, "sequences per process per micro-batch"),
    **{flag: TRAINING_FLAGS[flag] for flag in ("--grad-accum", "--lr", "--lora-r")},
    "--stage-split": ("stage_split", float, "share of the tokens spent in stage 1 (pretraining-like text)"),
    "--mix-interval": ("mix_interval", int, "optimiser steps between two updates of the sampling weights"),
    "--kd-weight": ("kd_weight", float,
                    "distillation from --dense: loss = (1 − w)·CE + w·T²·KL(dense ‖ pruned); 0 is off"),
    **{flag: TRAINING_FLAGS[flag] for flag in ("--checkpoint-every", "--stop-after-steps")},
    "--seed": ("seed", int, "seed of the data order, LoRA initialisation and dropout"),
    "--gradient-checkpointing": TRAINING_FLAGS["--gradient-checkpointing"],
}

DESCRIPTION = """\
Dynamic knowledge recovery (LoRAShear's stage 4): LoRA fine-tuning of a pruned model in two stages,
pretraining-like text (--data) then instructions (--instruct), one category per source. With
--mix dynamic each category's sampling weight follows its held-out loss against the dense model's.
LoRA is merged at the end: OUT holds the merged model and tokenizer, recover_config.yaml,
recovery.json, logs/ and plots/ (docs/design.md). The defaults are RecoverConfig's
(configs/methods/recover.yaml lists them); flags override --config."""

EPILOG = """\
Multi-process (tokens are a global budget; configs/accelerate/ holds cpu_2proc, multi_gpu, fsdp and fsdp_cpu_2proc;
FSDP shards both models across the processes: docs/multi-gpu.md):

    accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m lorashear recover ...

examples:

    lorashear recover runs/rand20 --dense smollm2-135m --data c4,code,tiny-stories \\
        --instruct alpaca-demo --tokens 20000 -o runs/rand20-rec
    lorashear recover runs/rand20 --config configs/methods/recover.yaml -o runs/rand20-rec
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "recover",
        help="fine-tune a pruned model with LoRA (pretraining-like text, then instructions) and merge",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=DESCRIPTION, epilog=EPILOG,
    )
    p.add_argument("pruned", help="the pruned model (folder, built-in name, .gguf)")
    p.add_argument("-o", "--out", required=True, help="output folder (must not exist)")
    p.add_argument("--dense", help="the dense model: reference losses for the dynamic mix, teacher for --kd-weight")
    p.add_argument("--data", nargs="+", help="stage-1 corpora or files, one category each (comma lists allowed)")
    p.add_argument("--instruct", nargs="+", help="stage-2 Alpaca-format sources, one category each")
    p.add_argument("--tokens", type=int, help="training tokens in all (both stages, all processes)")
    p.add_argument("--mix", choices=("dynamic", "uniform"),
                   help=f"sampling mix across categories (default {RecoverConfig.mix})")
    p.add_argument("--dtype", choices=DTYPES, help="both models' weights (default auto: bfloat16 on a CUDA GPU "
                   "that supports it, else float32); LoRA trains in float32")
    defaults = RecoverConfig()
    for flag, (field, kind, text) in _FLAGS.items():
        default = getattr(defaults, field)
        p.add_argument(flag, type=kind, help=text if default is None else f"{text} (default {default})")
    p.add_argument("--resume", action="store_true", help="continue the unfinished run of OUT from its last checkpoint")
    p.add_argument("--config", type=Path, metavar="YAML",
                   help="a YAML recipe, e.g. configs/methods/recover.yaml (flags override it)")
    p.set_defaults(handler=run)


def _split(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [v for item in values for v in item.split(",") if v]


def run(args: argparse.Namespace) -> int:
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
        **{field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _, _) in _FLAGS.items()},
    }
    if args.config is not None:
        config = RecoverConfig.from_yaml(args.config, **overrides)
    else:
        config = RecoverConfig.from_dict({k: v for k, v in overrides.items() if v is not None})
    result = recover(config)
    if result.finished and result.main_process:
        print(f"recovered model written to {result.out} ({result.steps} steps, {result.tokens_seen:,} tokens)")
    return 0
