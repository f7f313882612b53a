"""`lorashear prune MODEL --method M --ratio R -o OUT`: knowledge analysis, plan, compress, export."""

from __future__ import annotations

import argparse

from lorashear.cli.options import (
    add_calibration_args,
    add_knowledge_args,
    add_score_option_arg,
    calibration_config,
    knowledge_config,
    score_options,
)
from lorashear.graph.structures import DEFAULT_KINDS, GROUP_KINDS


def register(subparsers) -> None:
    from lorashear.prune import METHODS

    p = subparsers.add_parser("prune", help="remove structures from a model and save it as a HF folder",
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="methods:\n" + "\n".join(f"  {m.name:10s} {m.description}" for m in METHODS.values()))
    p.add_argument("model", help="model name, folder, peft adapter folder or GGUF")
    p.add_argument("--method", default="random", choices=list(METHODS))
    p.add_argument(
        "--ratio", type=float, required=True, help="fraction of all parameters to remove, in (0, 1)"
    )
    p.add_argument(
        "--uniform", action="store_true", help="remove the same number of each kind in every layer"
    )
    p.add_argument(
        "--structures",
        default=",".join(DEFAULT_KINDS),
        help=f"kinds, comma-separated: {', '.join(GROUP_KINDS)}",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--multiple-of",
        type=int,
        default=1,
        metavar="N",
        help="keep the MLP channels of each layer and the hidden channels a multiple of N (8 or 64 suit "
        "kernels; a hidden width divisible by the head count keeps a uniform export a plain config)",
    )
    p.add_argument(
        "--lora",
        action="store_true",
        help="MODEL is a peft adapter folder: prune the adapter with its base and keep it unmerged (adapter/)",
    )
    add_score_option_arg(p)
    add_calibration_args(p)
    add_knowledge_args(p, default_rule=None)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from lorashear.prune import METHODS
    from lorashear.prune.api import PruneConfig, prune_model

    config = PruneConfig(
        model=args.model,
        output=args.output,
        method=args.method,
        ratio=args.ratio,
        kinds=tuple(k.strip() for k in args.structures.split(",") if k.strip()),
        uniform=args.uniform,
        seed=args.seed,
        multiple_of=args.multiple_of,
        merge_lora=not args.lora,
        overwrite=args.overwrite,
        score_options=score_options(args.score_option),
        calibration=calibration_config(args),
        knowledge=knowledge_config(args, METHODS[args.method].criterion, METHODS[args.method].knowledge),
        batch_size=args.batch_size,
    )
    prune_model(config)
    return 0
