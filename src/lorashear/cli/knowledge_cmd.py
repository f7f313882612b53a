"""`lorashear knowledge MODEL -o OUT`: the knowledge-distribution analysis alone (JSON table + heatmap)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lorashear.cli.options import (
    add_calibration_args,
    add_dtype_arg,
    add_knowledge_args,
    add_placement_args,
    add_score_option_arg,
    calibration_config,
    knowledge_config,
    placement_of,
    score_options,
    split_list,
)
from lorashear.graph.structures import DEFAULT_KINDS
from lorashear.importance import CRITERIA
from lorashear.knowledge import heatmap, run_knowledge


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("knowledge", help="find the clusters (layer attention/MLP) that must not be pruned",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description="""\
LoRAShear's knowledge-distribution analysis alone (docs/knowledge.md): per cluster (each layer's
attention groups, each layer's MLP groups, the hidden channels) the held-out loss increase when its
lowest-scored groups are zeroed at each ratio, and which clusters are unprunable. Writes
OUT/knowledge.json and the heatmap OUT/knowledge.png; `lorashear prune --knowledge-from
OUT/knowledge.json` then uses the verdict instead of probing again.""", epilog="""\
examples:

    lorashear knowledge smollm2-135m -o runs/knowledge
    lorashear knowledge smollm2-135m --criterion taylor --unprunable-ratio 0.1 -o runs/knowledge-taylor
""")
    p.add_argument("model", help="built-in name, HF folder, peft adapter folder, .gguf file or hub id")
    p.add_argument("--structures", type=split_list, default=DEFAULT_KINDS, metavar="LIST",
                   help=f"kinds whose clusters are probed (default: {','.join(DEFAULT_KINDS)})")
    p.add_argument("--criterion", default="wanda-sp", choices=sorted(CRITERIA),
                   help="ranks the groups inside a cluster; the lowest are zeroed (default wanda-sp)")
    add_score_option_arg(p)
    add_calibration_args(p)
    add_knowledge_args(p, default_rule="auto")
    add_dtype_arg(p)
    add_placement_args(p)
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUT",
                   help="folder for knowledge.json and knowledge.png")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    result = run_knowledge(args.model, args.structures, knowledge_config(args, args.criterion), calibration_config(args),
                           criterion_options=score_options(args.score_option), dtype=args.dtype,
                           batch_size=args.batch_size, placement=placement_of(args))
    picture = heatmap(result, args.output / "knowledge.png")
    table = result.save(args.output / "knowledge.json")  # last: its presence means the analysis finished
    for c in result.clusters:
        devs = "  ".join(f"{r}: {v:+.4f}" for r, v in c.deviation.items())
        print(f"{c.name:22s} {len(c.groups):6d} groups  {devs}{'  UNPRUNABLE' if c.unprunable else ''}")
    print(f"wrote {table} and {picture}")
    return 0
