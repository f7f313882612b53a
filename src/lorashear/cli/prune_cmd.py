"""`lorashear prune MODEL --method M --ratio R -o OUT`: knowledge analysis, plan, compress, export."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from lorashear.cli.options import (
    add_calibration_args,
    add_dtype_arg,
    add_knowledge_args,
    add_option_args,
    add_placement_args,
    add_score_option_arg,
    calibration_config,
    fill_calibration_defaults,
    flag_given,
    knowledge_config,
    method_flags,
    option_flag,
    option_values,
    placement_of,
)
from lorashear.errors import LorashearError
from lorashear.graph.structures import DEFAULT_KINDS, GROUP_KINDS
from lorashear.prune import METHODS
from lorashear.prune.api import PruneConfig, prune_model
from lorashear.prune.methods import get_method
from lorashear.prune.options import TrainedConfig, option_names
from lorashear.train.config import read_recipe

if TYPE_CHECKING:
    from lorashear.prune.methods import Method

DESCRIPTION = """\
Knowledge analysis, plan, compress and export: the groups the method chooses are removed physically
and the model is saved as a smaller Hugging Face folder: a plain config that stock from_pretrained
loads where the architecture's config can describe the result (every layer alike), else the shipped
remote code. --ratio is the fraction of all parameters removed (tied embeddings counted once). The
folder also holds pruning.json (method, settings, calibration data, the knowledge verdict, the removed
groups) and knowledge.json (docs/design.md). An adapter folder's LoRA is pruned with its
base and merged, or kept as OUT/adapter/ with --lora. The methods: docs/criteria.md (one shot),
docs/lhspg.md, docs/loraprune.md."""

EPILOG = """\
The knowledge analysis runs first (rule auto) for every method but random; --knowledge-from takes an
earlier analysis's verdict instead of probing again, and pruning.json names the file. The trained
methods (lhspg, loraprune) train LoRA on the --data corpora while they prune. Each method's options are
one dataclass, whose fields are the flags of the option groups above and the keys of --config (a flat
YAML; flags win) and of a recipe's prune: section (docs/recipes.md). --resume continues
an interrupted run (.OUT.partial), `accelerate launch -m lorashear prune ...` runs them on several
processes, and OUT/METHOD/ gets steps.jsonl (loss, sparsity, groups per kind per step), curves.png and
training.yaml.

examples:

    lorashear prune smollm2-135m --method taylor --ratio 0.2 -o runs/taylor20
    lorashear prune smollm2-135m --method random --ratio 0.2 --uniform -o runs/rand20
    lorashear prune smollm2-135m --method taylor --ratio 0.2 --score-option variant=vector -o runs/taylor20v
    lorashear prune smollm2-135m --method lhspg --ratio 0.2 --config configs/methods/lhspg.yaml -o runs/lhspg20
    lorashear prune smollm2-135m --method loraprune --ratio 0.2 --unprunable fixed -o runs/loraprune20
"""


def register(subparsers) -> None:
    methods = "\n".join(f"    {m.name:10s} {m.description}" for m in METHODS.values())
    p = subparsers.add_parser("prune", help="remove structures from a model and save it as a HF folder",
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              description=DESCRIPTION, epilog=f"methods:\n\n{methods}\n\n{EPILOG}")
    p.add_argument("model", help="model name, folder, peft adapter folder or GGUF")
    p.add_argument("--method", default="random", choices=list(METHODS), help="how groups are chosen (below)")
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
    p.add_argument("--seed", type=int, default=None, help="random plans, a trained method's run (default 0)")
    p.add_argument(
        "--multiple-of",
        "--group-divisible",
        type=int,
        default=None,
        metavar="N",
        help="keep the MLP channels of each layer and the hidden channels a multiple of N (8 or 64 suit "
        "kernels; a hidden width divisible by the head count keeps a uniform export a plain config)",
    )
    p.add_argument(
        "--lora",
        action="store_true",
        help="MODEL is a peft adapter folder: prune the adapter with its base and keep it unmerged (adapter/)",
    )
    p.add_argument(
        "--norm-eps",
        choices=["exact", "stock"],
        default="exact",
        help="exact (default): remote code where the norms' eps differ; stock: keep the original eps in every "
        "norm so a uniform folder that only the shared rms_norm_eps keeps from being plain (hidden channels of "
        "Qwen3/Gemma 3/OLMo2) loads in any runtime; each such norm's output is scaled by at most "
        "1 + eps·(1 − d′/d)/(2·ms) (pruning.json states it)",
    )
    add_dtype_arg(p)
    add_placement_args(p)
    add_score_option_arg(p)
    add_calibration_args(p, defaults=False)
    add_knowledge_args(p, default_rule=None)
    p.add_argument("--knowledge-from", metavar="KNOWLEDGE_JSON",
                   help="use an earlier analysis's verdict (its knowledge.json, from `lorashear knowledge` or a "
                   "run's 02-knowledge/) instead of probing again (not together with --unprunable/--unprunable-ratio)")
    p.add_argument("--config", type=Path, metavar="YAML",
                   help="a flat YAML of the method's options, e.g. configs/methods/lhspg.yaml (flags override it)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the pruned model's folder")
    add_option_args(p, METHODS.values())  # one flag per field of the methods' option dataclasses
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    method = get_method(args.method)
    refuse_other_methods_flags(args, method)
    saved = read_recipe(args.config) if args.config is not None else {}
    own, values = method.split(saved, FILE_KEYS, f"in {args.config}")
    options = method.options({**values, **option_values(args, method.config_cls)})  # flags win
    trained = options if isinstance(options, TrainedConfig) else None
    if trained is not None:  # the calibration text defaults to the training run's (and its seed and batch are the run's)
        fill_calibration_defaults(args, trained.data, trained.seq_len, trained.batch_size)
    else:
        fill_calibration_defaults(args)
    config = PruneConfig(
        model=args.model,
        output=args.output,
        method=args.method,
        ratio=args.ratio,
        kinds=tuple(k.strip() for k in args.structures.split(",") if k.strip()),
        uniform=args.uniform,
        seed=trained.seed if trained is not None else (args.seed or 0),
        multiple_of=args.multiple_of if args.multiple_of is not None else own.get("multiple_of", 1),
        merge_lora=not args.lora,
        norm_eps=args.norm_eps,
        overwrite=args.overwrite,
        calibration=calibration_config(args),
        knowledge=knowledge_config(args, method.probe_criterion, method.knowledge),
        knowledge_from=_knowledge_from(args),
        batch_size=args.batch_size,
        dtype=args.dtype,
        placement=placement_of(args),
        options=options,
    )
    prune_model(config)
    return 0


# Flags of the command itself that a trained run's options read too (never another method's flag).
COMMAND_FLAGS = ("--data", "--seq-len", "--batch-size", "--seed")
FILE_KEYS = ("multiple_of",)  # a --config file's keys beyond the method's options (--multiple-of)


def refuse_other_methods_flags(args: argparse.Namespace, method: Method) -> None:
    """Flags of options `method` does not have are refused, naming the methods that take them."""
    flags = {flag: owners for flag, (_, _, owners) in method_flags(METHODS.values()).items()
             if flag not in COMMAND_FLAGS and flag_given(args, flag) and method.name not in owners}
    training = {option_flag(TrainedConfig.__dataclass_fields__[name]) for name in option_names(TrainedConfig)}
    other = [flag for flag in flags if flag not in training]
    if other:
        owners = [m for m in METHODS if all(m in flags[flag] for flag in other)]
        raise LorashearError(f"{', '.join(other)}: not an option of --method {method.name}"
                             + (f"; use --method {' or '.join(owners)}" if owners else ""))
    if flags:
        trained = ", ".join(m.name for m in METHODS.values() if m.trained)
        raise LorashearError(f"{', '.join(flags)}: training options apply to trained methods only ({trained})")


def _knowledge_from(args: argparse.Namespace) -> str | None:
    """--knowledge-from's file; naming a rule as well is refused (the file's verdict is the rule)."""
    if args.knowledge_from is not None and (args.unprunable is not None or args.unprunable_ratio is not None):
        raise LorashearError("--knowledge-from uses that analysis's verdict; drop --unprunable/--unprunable-ratio")
    return args.knowledge_from
