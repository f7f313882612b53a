"""`lorashear analyze MODEL`: discover the model's minimally removable structures and summarize them."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lorashear.cli.options import add_dtype_arg
from lorashear.errors import LorashearError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="discover the groups (minimally removable structures) of a model",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description="""\
Discover the minimally removable structures (groups) of a model and summarize them per kind: groups,
prunable groups, parameters per group and in total; every unprunable group with its reason; the
discovery time. The model is built on the meta device: no weight is read. An adapter folder is traced
with its LoRA factors; --lora attaches a fresh r=8 adapter to a plain model first. The group kinds:
docs/design.md.""", epilog="""\
examples:

    lorashear analyze smollm2-135m
    lorashear analyze smollm2-135m --lora --kinds all --json graph.json
""")
    p.add_argument("model", help="built-in name, HF folder, peft adapter folder, .gguf file or hub id")
    p.add_argument("--lora", action="store_true", help="attach peft LoRA (r=8, all linear layers) first")
    p.add_argument("--kinds", default=None, metavar="LIST",
                   help="comma-separated group kinds (default: kv_group,mlp_channel; 'all' for every kind)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="write every group (its kind, layer and parameter slices) to this JSON file")
    add_dtype_arg(p)
    p.set_defaults(handler=run)


def load(spec: str, lora: bool = False, dtype: str = "auto"):
    """The model to analyze on the meta device (no weights are read: tracing needs shapes only), with
    peft LoRA (r=8, all linear layers) attached when `lora`."""
    from lorashear.models import load_skeleton

    model = load_skeleton(spec, dtype)
    if lora:
        from accelerate import init_empty_weights
        from peft import LoraConfig, get_peft_model

        if hasattr(model, "peft_config"):
            raise LorashearError(f"{spec} is a LoRA adapter folder and already has an adapter; drop --lora")
        with init_empty_weights():
            model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear")).eval()
    return model


def parse_kinds(text: str | None) -> tuple[str, ...]:
    from lorashear.graph import DEFAULT_KINDS, GROUP_KINDS

    if text is None:
        return DEFAULT_KINDS
    if text == "all":
        return GROUP_KINDS
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in GROUP_KINDS]
    if unknown or not kinds:
        raise LorashearError(f"unknown group kinds {unknown or [text]}; choose from {', '.join(GROUP_KINDS)} or 'all'")
    return kinds


def kind_stats(graph, kinds: tuple[str, ...]) -> dict[str, dict]:
    """Per kind: number of groups, prunable groups, parameters per group (min, max) and in total."""
    stats = {}
    for kind in kinds:
        sizes = [g.num_params(graph.param_shapes) for g in graph.of_kind(kind)]
        stats[kind] = {
            "groups": len(sizes),
            "prunable": sum(g.prunable for g in graph.of_kind(kind)),
            "params_per_group": [min(sizes), max(sizes)] if sizes else None,
            "params": sum(sizes),
        }
    return stats


def summarize(graph, kinds: tuple[str, ...], seconds: float) -> str:
    """Per kind: groups, prunable groups, parameters per group and in total; unprunable reasons."""
    lines = [f"{'kind':16s} {'groups':>8s} {'prunable':>9s} {'params/group':>13s} {'params':>12s}"]
    for kind, st in kind_stats(graph, kinds).items():
        low, high = st["params_per_group"] or (None, None)
        per = "-" if low is None else (f"{low}" if low == high else f"{low}-{high}")
        lines.append(f"{kind:16s} {st['groups']:8d} {st['prunable']:9d} {per:>13s} {st['params']:12d}")
    for g in graph.groups:
        if g.kind in kinds and not g.prunable:
            first = g.slices[0].param if g.slices else "?"
            lines.append(f"unprunable {g.kind} layer={g.layer} ({first} ...): {g.unprunable}")
    lines.append(f"discovery time: {seconds:.2f} s")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from lorashear.graph import build_graph

    kinds = parse_kinds(args.kinds)
    model = load(args.model, args.lora, args.dtype)
    start = time.perf_counter()
    graph = build_graph(model, kinds=kinds)
    seconds = time.perf_counter() - start
    print(summarize(graph, kinds, seconds))
    if args.json is not None:
        target = args.json
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.tmp")  # written next to the target, renamed at the end
        graph.save(staging)
        staging.replace(target)
        print(f"groups written to {target}")
    return 0
