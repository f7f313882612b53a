"""`lorashear eval MODEL [MODEL ...]`: perplexity, zero-shot accuracy (lm-eval) and speed of models.

Several models are evaluated one by one; with --speed they are timed side by side (alternating in one
window, `evaluate.compare`), so their speed ratios hold on a busy machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from lorashear.cli.options import add_dtype_arg, add_placement_args, placement_of
from lorashear.data import ZERO_SHOT_TASKS
from lorashear.errors import LorashearError
from lorashear.evaluate import EvalConfig, default_limit, evaluate_config, write_json
from lorashear.evaluate.many import evaluate_many
from lorashear.io import write_atomic
from lorashear.models import default_device, load_model, load_tokenizer, resolve_dtype


def _task_list(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _limit(text: str) -> int | str | None:
    """`--limit N`, `all` (None: every document) or `auto` (the device's default, `default_limit`)."""
    return {"all": None, "auto": "auto"}[text] if text in ("all", "auto") else int(text)


DESCRIPTION = """\
Evaluate a model. By default: wiki perplexity (128 windows of 512 tokens) and the seven zero-shot tasks
through lm-eval, on every document on a GPU and the first 200 of each task on a CPU (the full sets,
about 69 K requests, take days there). It prints its stages and an estimated time first (and how to
shorten a long run), then each figure as it is measured and a markdown table at the end; --json is
rewritten after every stage, so a stopped run keeps what it measured. One model: its absolute speed
with --speed; several (named before the options): each is evaluated, then all are timed side by side,
speed as ratios to the first. The conventions (windows, BOS, metrics, speed): docs/design.md."""

EPILOG = """\
examples:

    lorashear eval smollm2-135m --ppl wiki --ppl-windows 32 --tasks piqa,arc_easy --limit 100
    lorashear eval runs/rand20 --ppl-windows 32 --tasks piqa --limit 100 --json rand20.json
    lorashear eval smollm2-135m runs/rand20 --no-ppl --tasks none --speed
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a model: perplexity, zero-shot tasks, speed", description=DESCRIPTION,
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="built-in name, local model folder (pruned ones included) or .gguf file")
    p.add_argument("others", nargs="*", metavar="MODEL",
                   help="more models (before the options): each is evaluated; with --speed all are timed side by side, "
                        "as ratios to the first")
    p.add_argument("--ppl", action="append", metavar="CORPUS",
                   help="corpus for perplexity (repeatable; default: wiki)")
    p.add_argument("--no-ppl", action="store_true", help="skip perplexity")
    p.add_argument("--ppl-windows", type=int, default=128, metavar="N",
                   help="score the first N non-overlapping 512-token windows (default 128)")
    p.add_argument("--tasks", type=_task_list, default=ZERO_SHOT_TASKS, metavar="LIST",
                   help=f"comma-separated zero-shot tasks, or 'none' (default: {','.join(ZERO_SHOT_TASKS)})")
    p.add_argument("--limit", type=_limit, default="auto", metavar="N|all",
                   help="first N documents of each task, or all (default auto: all on a GPU, 200 on a CPU)")
    p.add_argument("--speed", action="store_true",
                   help="also measure prefill/decode speed, memory and MACs (one model: absolute; several: compared)")
    p.add_argument("--batch-size", type=int, default=4, metavar="B", help="batch size for PPL and tasks")
    p.add_argument("--json", metavar="PATH",
                   help="write the results as one JSON object, after every stage (settings.pending: stages not run)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    add_dtype_arg(p)
    add_placement_args(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    tasks = () if args.tasks == ("none",) else args.tasks
    corpora = () if args.no_ppl else tuple(args.ppl or ("wiki",))
    limit = None if args.limit == "auto" else args.limit
    # Validate every setting before the (slow) model load.
    config = EvalConfig(ppl_corpora=corpora, ppl_windows=args.ppl_windows, tasks=tasks, limit=limit,
                        speed=args.speed, batch_size=args.batch_size)
    device = torch.device(args.device) if args.device else default_device()
    args.dtype = resolve_dtype(args.dtype, device)  # a bad dtype fails before the (slow) model load
    args.placement = placement_of(args)
    if args.placement is not None and (args.device or args.speed):
        raise LorashearError("--device-map spreads a model over the devices: give no --device, and time (--speed) "
                             "models that fit one device")
    if args.limit == "auto":
        config = dataclasses.replace(config, limit=default_limit(device.type))
    if args.others:
        return _run_several([args.model, *args.others], config, args)
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, device=args.device, dtype=args.dtype, placement=args.placement)
    save = (lambda result: write_json(result, args.json)) if args.json else None
    result = evaluate_config(model, tokenizer, config, model_name=args.model, on_update=save)
    print(result.to_markdown())
    if args.json:
        print(f"wrote {write_json(result, args.json)}")
    return 0


def _run_several(names: list[str], config, args: argparse.Namespace) -> int:
    """Evaluate each model (one loaded at a time); with --speed, time them side by side (ratios to the first)."""
    if len(set(names)) < len(names):
        raise LorashearError(f"a model is named twice in {names}: name each model once")
    done = evaluate_many({name: name for name in names}, config, device=args.device, dtype=args.dtype,
                         placement=args.placement, on_result=lambda name, result: print(result.to_markdown()))
    if done.speed is not None:
        print(done.speed.to_markdown())
    if args.json:
        payload = {"models": [r.to_dict() for r in done.results.values()],
                   "speed": done.speed.to_dict() if done.speed else None}
        written = write_atomic(args.json, json.dumps(payload, indent=2) + "\n")
        print(f"wrote {written}")
    return 0
