"""`lorashear demo`: the pipeline's packaged demo recipe on the embedded default model (what `make demo` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lorashear.cli.run_cmd import add_run_args
from lorashear.cli.run_cmd import run as run_recipe_command

DEMO_RECIPE = "demo"  # the packaged recipe (lorashear/recipes/demo.yaml)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on the default model at a small budget (the packaged demo recipe)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description="""\
`lorashear run demo`: the packaged demo recipe (recipes/demo.yaml, shipped with the package, so it runs
from any installation) on the embedded default model: the removable structures, the knowledge analysis,
20% removed by LoRAShear's LHSPG, a short LoRA recovery, then dense vs pruned vs recovered in
OUT/report.md. Under 20 minutes on 2 CPU cores; --resume skips what is finished. The demo shows the
machinery at a small budget, not the methods' quality (benchmarks/methods.py measures that).""", epilog="""\
examples:

    lorashear demo                                   # into demo-out/
    lorashear demo -o demo-out --resume              # continue or skip finished stages
    lorashear demo -o demo-quick evaluate.tasks=[piqa] recover.tokens=5000
""")
    add_run_args(p, output_default=Path("demo-out"))
    p.set_defaults(handler=run, recipe=DEMO_RECIPE)


def run(args: argparse.Namespace) -> int:
    return run_recipe_command(args)
