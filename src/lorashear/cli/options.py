"""Argument groups shared by several commands (calibration data, knowledge analysis, criterion options)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lorashear.data import PRETRAIN_CORPORA
from lorashear.errors import LorashearError
from lorashear.prune.trained import SHARED_WITH_PRUNE, TrainedConfig


def add_dtype_arg(p: argparse.ArgumentParser) -> None:
    """--dtype: the weights' dtype of every model the command loads."""
    from lorashear.models import DTYPES

    p.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="weights' dtype (default auto: bfloat16 on a CUDA GPU that supports it, else float32)")


def split_list(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def add_calibration_args(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    """--data, --calib-samples, --seq-len, --batch-size; `defaults=False` leaves the shared ones None
    (`lorashear prune` fills them from a trained method's recipe, else from `fill_calibration_defaults`)."""
    g = p.add_argument_group("calibration data (training corpora only; evaluation sets are refused)")
    g.add_argument("--data", type=split_list, default=PRETRAIN_CORPORA if defaults else None, metavar="LIST",
                   help=f"corpora or local files, comma-separated (default: {','.join(PRETRAIN_CORPORA)}); "
                        "a trained method also trains on them")
    g.add_argument("--calib-samples", type=int, default=64, metavar="N",
                   help="calibration sequences for scoring (default 64)")
    g.add_argument("--seq-len", type=int, default=256 if defaults else None, metavar="L",
                   help="tokens per sequence (default 256)")
    g.add_argument("--batch-size", type=int, default=4 if defaults else None, metavar="B",
                   help="sequences per forward pass (default 4; a trained method's per-process training batch)")


def fill_calibration_defaults(args: argparse.Namespace, data=PRETRAIN_CORPORA, seq_len: int = 256,
                              batch_size: int = 4) -> None:
    """Give --data, --seq-len and --batch-size the values passed here where the command line gave none."""
    for name, value in (("data", data), ("seq_len", seq_len), ("batch_size", batch_size)):
        if getattr(args, name) is None:
            setattr(args, name, value)


# Flags of every trained method (the LoopConfig/TrainedConfig field each sets); --data, --seq-len,
# --batch-size and --seed are the command's own and set the training run too.
# The help shows TrainedConfig's default of each (so it cannot go stale), where it has one.
TRAINING_FLAGS = {
    "--tokens": ("tokens", int, "training tokens in all, every process together"),
    "--lr": ("lr", float, "LoRA learning rate"),
    "--grad-accum": ("grad_accum", int, "micro-batches per optimiser step"),
    "--lora-r": ("lora_r", int, "LoRA rank"),
    "--checkpoint-every": ("checkpoint_every", int, "optimiser steps between checkpoints"),
    "--stop-after-steps": ("stop_after_steps", int, "stop after this step, keeping a checkpoint for --resume"),
    "--gradient-checkpointing": ("gradient_checkpointing", str,
                                 "recompute activations in the backward pass: auto (on from 1B parameters), true, false"),
}
SHARED_TRAINING_FIELDS = ("data", "seq_len", *SHARED_WITH_PRUNE)


def add_training_args(p: argparse.ArgumentParser, methods: str) -> None:
    g = p.add_argument_group(f"training ({methods}: LoRA trains while structures are pruned)")
    defaults = TrainedConfig()
    for flag, (field, kind, text) in TRAINING_FLAGS.items():
        default = getattr(defaults, field)
        shown = "" if default is None else f" (default {default:g})" if kind is not str else f" (default {default})"
        g.add_argument(flag, dest=field, type=kind, help=text + shown)
    g.add_argument("--resume", action="store_true", default=None,
                   help="continue the unfinished run of -o OUT from its last checkpoint (.OUT.partial)")
    g.add_argument("--config", type=Path, metavar="YAML",
                   help="a recipe, e.g. recipes/lhspg.yaml: training and method options (flags override it)")


def training_overrides(args: argparse.Namespace) -> dict:
    """TrainedConfig values the command line gave (None: not given)."""
    names = [field for field, _, _ in TRAINING_FLAGS.values()] + ["resume", *SHARED_TRAINING_FIELDS]
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def add_knowledge_args(p: argparse.ArgumentParser, default_rule: str | None) -> None:
    g = p.add_argument_group("knowledge-distribution analysis (which layers' clusters must not be pruned)")
    g.add_argument("--unprunable", choices=["auto", "none", "fixed"], default=default_rule,
                   help="auto: clusters whose pruning moves the held-out loss far more than the others' (data-driven); "
                        "fixed: first 10%% of layers and the last (LLM-Pruner/LoRAPrune); none: no analysis "
                        f"(default: {default_rule or 'the method default: auto, none for random'})")
    g.add_argument("--unprunable-ratio", type=float, default=None, metavar="γ",
                   help="instead of the auto rule, keep the γ fraction of clusters with the largest deviation")
    g.add_argument("--knowledge-ratios", type=split_list, default=("0.25", "0.5"), metavar="LIST",
                   help="fractions of a cluster's groups zeroed when probing it (default 0.25,0.5)")
    g.add_argument("--knowledge-samples", type=int, default=8, metavar="N",
                   help="held-out calibration sequences the probe's loss is measured on (default 8)")


def add_score_option_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--score-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the criterion (e.g. variant=vector for taylor, reduce=mean, normalize=l2); repeatable")


def calibration_config(args: argparse.Namespace):
    from lorashear.importance import CalibrationConfig

    return CalibrationConfig(data=args.data, samples=args.calib_samples, seq_len=args.seq_len,
                             held_out=args.knowledge_samples)


def knowledge_config(args: argparse.Namespace, criterion: str | None, default_rule: str = "auto"):
    """The KnowledgeConfig the flags ask for (`default_rule` where no rule is named: the method's)."""
    from lorashear.knowledge import KnowledgeConfig

    try:
        ratios = tuple(float(r) for r in args.knowledge_ratios)
    except ValueError as err:
        raise LorashearError(f"--knowledge-ratios takes numbers, got {','.join(args.knowledge_ratios)}") from err
    if args.unprunable_ratio is not None and args.unprunable not in (None, "auto"):
        raise LorashearError(f"--unprunable-ratio sets the rule itself; drop --unprunable {args.unprunable}")
    rule = "ratio" if args.unprunable_ratio is not None else (args.unprunable or default_rule)
    return KnowledgeConfig(rule=rule, unprunable_ratio=args.unprunable_ratio, ratios=ratios,
                           criterion=criterion or "wanda-sp")


def score_options(items: list[str]) -> dict[str, str]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LorashearError(f"--score-option takes KEY=VALUE, got {item!r}")
        options[key.strip()] = value.strip()
    return options
