"""`lorashear prune MODEL --method M --ratio R -o OUT`: knowledge analysis, plan, compress, export."""

from __future__ import annotations

import argparse
from dataclasses import fields

from lorashear.cli.options import (
    add_calibration_args,
    add_dtype_arg,
    add_knowledge_args,
    add_score_option_arg,
    add_training_args,
    calibration_config,
    fill_calibration_defaults,
    knowledge_config,
    score_options,
    training_overrides,
)
from lorashear.errors import LorashearError
from lorashear.graph.structures import DEFAULT_KINDS, GROUP_KINDS

DESCRIPTION = """\
Knowledge analysis, plan, compress and export: the groups the method chooses are removed physically
and the model is saved as a smaller Hugging Face folder: a plain config that stock from_pretrained
loads where the architecture's config can describe the result (every layer alike), else the shipped
remote code. --ratio is the fraction of all parameters removed (tied embeddings counted once). The
folder also holds pruning.json (method, settings, calibration data, the knowledge verdict, the removed
groups), plan.json and knowledge.json (docs/design.md). An adapter folder's LoRA is pruned with its
base and merged, or kept as OUT/adapter/ with --lora. The methods: docs/criteria.md (one shot),
docs/lhspg.md, docs/loraprune.md."""

EPILOG = """\
The knowledge analysis runs first (rule auto) for every method but random; --knowledge-from takes an
earlier analysis's verdict instead of probing again, and pruning.json names the file. The trained
methods (lhspg, loraprune) train LoRA on the --data corpora while they prune: their flags are this
command's training and method groups, --config takes a flat recipe of both (flags win), --resume continues
an interrupted run (.OUT.partial), `accelerate launch -m lorashear prune ...` runs them on several
processes, and OUT/METHOD/ gets steps.jsonl (loss, sparsity, groups per kind per step), curves.png and
training.yaml.

examples:

    lorashear prune smollm2-135m --method taylor --ratio 0.2 -o runs/taylor20
    lorashear prune smollm2-135m --method random --ratio 0.2 --uniform -o runs/rand20
    lorashear prune smollm2-135m --method taylor --ratio 0.2 --score-option variant=vector -o runs/taylor20v
    lorashear prune smollm2-135m --method lhspg --ratio 0.2 --config recipes/lhspg.yaml -o runs/lhspg20
    lorashear prune smollm2-135m --method loraprune --ratio 0.2 --unprunable fixed -o runs/loraprune20
"""


def register(subparsers) -> None:
    from lorashear.prune import METHODS

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
    add_score_option_arg(p)
    add_calibration_args(p, defaults=False)
    add_knowledge_args(p, default_rule=None)
    p.add_argument("--knowledge-from", metavar="KNOWLEDGE_JSON",
                   help="use an earlier analysis's verdict (its knowledge.json, from `lorashear knowledge` or a "
                   "run's 02-knowledge/) instead of probing again (not together with --unprunable/--unprunable-ratio)")
    add_training_args(p, ", ".join(m.name for m in METHODS.values() if m.trained))
    add_method_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the pruned model's folder")
    p.set_defaults(handler=run)


# Trained methods' option fields set by add_method_args's flags (each method takes those its options
# dataclass has); group_divisible comes from --multiple-of, the criterion's options from --score-option.
METHOD_FLAGS = ("warmup_share", "periods", "epsilon", "lambda_rule", "variant", "merge", "saliency",
                "saliency_samples", "saliency_steps", "beta", "cooldown_share", "mask_every", "subtract_cross")
SCORE_OPTION_FIELDS = ("saliency_options", "criterion_options")  # where a trained method takes --score-option


def add_method_args(p: argparse.ArgumentParser) -> None:
    from lorashear.importance import CRITERIA
    from lorashear.prune.lhspg import LAMBDA_RULES, MERGES, VARIANTS, LhspgConfig

    g = p.add_argument_group("LHSPG and LoRAPrune (defaults in recipes/lhspg.yaml, recipes/loraprune.yaml)")
    g.add_argument("--warmup-share", type=float, help="share of the steps trained before pruning starts (0.1)")
    g = p.add_argument_group("LHSPG (--method lhspg)")
    g.add_argument("--periods", type=int, help="pruning periods; each zeroes ratio/periods more (5)")
    g.add_argument("--epsilon", type=float, help="half-space test: zero a group when x̃ᵀx < ε‖x‖² (0)")
    g.add_argument("--lambda-rule", choices=LAMBDA_RULES, help="step towards zero: ‖x‖/(steps left) or constant")
    g.add_argument("--variant", choices=VARIANTS, help="Algorithm 4's projection, or the released code's fade")
    g.add_argument("--merge", choices=MERGES, help="period end: merge BA and restart LoRA (reset), or keep it")
    g.add_argument("--saliency", help=f"criterion that picks each period's groups ({LhspgConfig.saliency}; any of "
                   f"{', '.join(CRITERIA)}); its options via --score-option")
    g.add_argument("--saliency-samples", type=int, metavar="N",
                   help="a data-driven saliency scores the first N calibration samples at each period start "
                   "(default: all --calib-samples); its cost per start scales with N")
    g.add_argument("--saliency-steps", type=int, metavar="N",
                   help="a gradient saliency (taylor) reads the weight gradients of the N training steps that end "
                   "at each period start instead of calibration passes (default: calibration)")
    g = p.add_argument_group("LoRAPrune (--method loraprune; lora-grad options via --score-option)")
    g.add_argument("--beta", type=float, help="moving average of the scores: s ← β·s + (1 − β)·s_new (0.9)")
    g.add_argument("--cooldown-share", type=float, help="share of the last steps held at the target ratio (0.1)")
    g.add_argument("--mask-every", type=int, metavar="N", help="optimiser steps between mask updates (10)")
    g.add_argument("--subtract-cross", action="store_true", default=None,
                   help="the released code's G − ∇B·∇A instead of the paper's G = ∇B·A + B·∇A")


def run(args: argparse.Namespace) -> int:
    from lorashear.prune import METHODS
    from lorashear.prune.api import PruneConfig, prune_model

    method = METHODS[args.method]
    training, options = _trained(args, method)
    multiple_of = options.group_divisible if options is not None else (1 if args.multiple_of is None else args.multiple_of)
    config = PruneConfig(
        model=args.model,
        output=args.output,
        method=args.method,
        ratio=args.ratio,
        kinds=tuple(k.strip() for k in args.structures.split(",") if k.strip()),
        uniform=args.uniform,
        seed=training.seed if training is not None else (args.seed or 0),
        multiple_of=multiple_of,
        merge_lora=not args.lora,
        norm_eps=args.norm_eps,
        overwrite=args.overwrite,
        score_options={} if method.trained else score_options(args.score_option),
        calibration=calibration_config(args),
        knowledge=knowledge_config(args, method.probe_criterion, method.knowledge),
        knowledge_from=_knowledge_from(args),
        batch_size=args.batch_size,
        dtype=args.dtype,
        training=training,
        method_options=options,
    )
    prune_model(config)
    return 0


def _knowledge_from(args: argparse.Namespace) -> str | None:
    """--knowledge-from's file; naming a rule as well is refused (the file's verdict is the rule)."""
    if args.knowledge_from is not None and (args.unprunable is not None or args.unprunable_ratio is not None):
        raise LorashearError("--knowledge-from uses that analysis's verdict; drop --unprunable/--unprunable-ratio")
    return args.knowledge_from


def _trained(args: argparse.Namespace, method):
    """(TrainedConfig, the method's options) from --config and the flags; (None, None) for one-shot methods,
    which refuse training flags. The calibration shares --data, --seq-len and --batch-size with training."""
    from lorashear.prune import METHODS
    from lorashear.prune.trained import load_recipe

    given = training_overrides(args)
    own = {f: getattr(args, f) for f in METHOD_FLAGS if getattr(args, f) is not None}
    takes = _option_names(method)
    foreign = [f for f in own if f not in takes]
    if foreign:
        owners = [m.name for m in METHODS.values() if set(foreign) <= _option_names(m)]
        named = ", ".join("--" + f.replace("_", "-") for f in foreign)
        raise LorashearError(f"{named}: not an option of --method {method.name}"
                             + (f"; use --method {' or '.join(owners)}" if owners else ""))
    if not method.trained:
        flags = sorted(k for k in given if k not in ("data", "seq_len", "batch_size", "seed"))
        if flags or args.config is not None:
            named = ", ".join("--" + f.replace("_", "-") for f in flags) or "--config"
            trained = ", ".join(m.name for m in METHODS.values() if m.trained)
            raise LorashearError(f"{named}: training options apply to trained methods only ({trained})")
        fill_calibration_defaults(args)
        return None, None
    if args.multiple_of is not None:
        own["group_divisible"] = args.multiple_of
    if args.score_option:
        field = next((f for f in SCORE_OPTION_FIELDS if f in takes), None)
        if field is None:
            raise LorashearError(f"--score-option: method '{method.name}' has no criterion options")
        own[field] = score_options(args.score_option)
    training, options = load_recipe(args.config, {**given, **own}, method.options)
    fill_calibration_defaults(args, training.data, training.seq_len, training.batch_size)
    return training, options


def _option_names(method) -> set[str]:
    """The fields of a method's own options dataclass (none for one-shot methods)."""
    return set() if method.options is None else {f.name for f in fields(method.options)}
