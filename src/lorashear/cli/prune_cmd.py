"""`lorashear prune MODEL --method random --ratio R -o OUT`: plan, compress, export."""

from __future__ import annotations

import argparse

from lorashear.graph.structures import DEFAULT_KINDS, GROUP_KINDS


def register(subparsers) -> None:
    p = subparsers.add_parser("prune", help="remove structures from a model and save it as a HF folder")
    p.add_argument("model", help="model name, folder, peft adapter folder or GGUF")
    p.add_argument("--method", default="random", choices=["random"])
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
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
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
    )
    prune_model(config)
    return 0
