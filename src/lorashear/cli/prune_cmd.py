"""`lorashear prune MODEL --method random --ratio R -o OUT`: plan, compress, export."""

from __future__ import annotations

import argparse
import json

from lorashear.graph.structures import DEFAULT_KINDS, GROUP_KINDS


def register(subparsers) -> None:
    p = subparsers.add_parser("prune", help="remove structures from a model and save it as a HF folder")
    p.add_argument("model", help="model name, folder or GGUF")
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
    p.add_argument("--lora", action="store_true", help="keep the model's LoRA adapter unmerged (adapter/)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from lorashear.compress import compress, count_params, export
    from lorashear.errors import LorashearError
    from lorashear.graph import build_graph
    from lorashear.models import load_model, load_tokenizer
    from lorashear.prune import METHODS

    kinds = [k.strip() for k in args.structures.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(GROUP_KINDS))
    if unknown:
        raise LorashearError(f"unknown --structures {unknown}; choose from {', '.join(GROUP_KINDS)}")
    if not 0.0 < args.ratio < 1.0:
        raise LorashearError(f"--ratio must be in (0, 1), got {args.ratio}")
    model = load_model(args.model, device="cpu")
    try:
        tokenizer = load_tokenizer(args.model)
    except LorashearError as err:  # a bare model folder: export without a tokenizer
        print(f"warning: {err}; the pruned folder will have no tokenizer")
        tokenizer = None
    try:
        graph = build_graph(model, tuple(kinds))
    except NotImplementedError as err:
        raise LorashearError(f"cannot trace this model: {err}") from err
    plan = METHODS[args.method](
        graph, args.ratio, kinds, uniform=args.uniform, seed=args.seed, aliases=tied_aliases(model)
    )
    params_before = count_params(model)
    compress(model, plan.groups)
    folder = export(
        model,
        tokenizer,
        args.output,
        plan.groups,
        params_before,
        merge_lora=not args.lora,
        overwrite=args.overwrite,
        extra_files={"plan.json": json.dumps(plan.to_dict())},
    )
    print(
        f"removed {plan.params_removed:,} of {plan.params_total:,} parameters ({plan.achieved_ratio:.2%}) -> {folder}"
    )
    return 0


def tied_aliases(model) -> dict[str, str]:
    """state_dict names that share a tensor with an earlier name (tied embeddings) -> that name."""
    first: dict[int, str] = {}
    aliases = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in first:
            aliases[name] = first[id(t)]
        else:
            first[id(t)] = name
    return aliases
