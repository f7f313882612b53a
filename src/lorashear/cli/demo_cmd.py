"""`lorashear demo`: the main job on the embedded default model (what `make demo` runs)."""

from __future__ import annotations

import argparse

from lorashear.models import DEFAULT_MODEL


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="evaluate the default model, prune it 20%%, evaluate the pruned folder",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description="""\
The quick comparison, with no recipe file (it works from an installed package anywhere): evaluate the
dense model, prune it with a random plan (uniform layers), evaluate the pruned folder and time both side
by side; the comparison table goes to OUTPUT/summary.md (and summary.json), the pruned folder to
OUTPUT/pruned/. No knowledge analysis, no recovery. `make demo` runs the whole pipeline instead:
lorashear run recipes/demo.yaml -o demo-out.""", epilog="""\
example:

    lorashear demo --ppl-windows 8 --limit 10 --no-speed
""")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model argument (default {DEFAULT_MODEL})")
    p.add_argument("-o", "--output", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--ratio", type=float, default=0.2, help="fraction of parameters to remove (default 0.2)")
    p.add_argument("--ppl-windows", type=int, default=32, help="perplexity windows of 512 tokens (default 32)")
    p.add_argument("--limit", type=int, default=30, help="first N documents of each zero-shot task (default 30)")
    p.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from lorashear.demo import DemoConfig, run_demo

    run_demo(DemoConfig(model=args.model, output=args.output, ratio=args.ratio, ppl_windows=args.ppl_windows,
                        limit=args.limit, speed=not args.no_speed))
    return 0
