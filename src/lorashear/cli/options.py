"""Argument groups shared by several commands (calibration data, knowledge analysis, criterion options)."""

from __future__ import annotations

import argparse

from lorashear.data import PRETRAIN_CORPORA
from lorashear.errors import LorashearError


def split_list(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def add_calibration_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("calibration data (training corpora only; evaluation sets are refused)")
    g.add_argument("--data", type=split_list, default=PRETRAIN_CORPORA, metavar="LIST",
                   help=f"corpora or local files, comma-separated (default: {','.join(PRETRAIN_CORPORA)})")
    g.add_argument("--calib-samples", type=int, default=64, metavar="N",
                   help="calibration sequences for scoring (default 64)")
    g.add_argument("--seq-len", type=int, default=256, metavar="L", help="tokens per sequence (default 256)")
    g.add_argument("--batch-size", type=int, default=4, metavar="B", help="sequences per forward pass (default 4)")


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
