"""`lorashear run RECIPE -o OUT [--resume] [KEY.SUB=VALUE ...]` and `lorashear report OUT`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lorashear.errors import LorashearError
from lorashear.models import DTYPES
from lorashear.pipeline import load_recipe, run_recipe, write_report
from lorashear.pipeline.recipe import packaged_recipes
from lorashear.pipeline.runner import RECIPE_FILE

RUN_DESCRIPTION = """\
The pipeline from one YAML recipe (docs/recipes.md): analyze → knowledge → prune (compress/export) →
recover → evaluate → report, each stage in OUT/NN-stage/ with its resolved config.yaml; then
OUT/report.md (and OUT/report.html, the same as one page) with OUT/figures/, and a model card
(README.md with Hugging Face metadata) in each exported model folder. A stage writes into
OUT/.NN-stage.partial/ and is renamed and marked DONE when it finishes. --resume skips finished stages
and resumes an interrupted recovery or trained prune from its checkpoint; it must resolve to the same
recipe. The run-folder layout: docs/design.md."""

RUN_EPILOG = """\
Overrides are KEY.SUB=VALUE, the value read as YAML; `SECTION=null` switches a stage off.

examples:

    lorashear run recipes/demo.yaml -o demo-out
    lorashear run demo -o demo-out --resume          # a packaged recipe by its name, from any installation
    lorashear run recipes/lorashear-20.yaml -o runs/ls50 prune.ratio=0.5
    lorashear run recipes/llm-pruner-20.yaml -o runs/llmp20 prune.ratio=0.3 recover.tokens=50000
    lorashear run recipes/lorashear-20.yaml -o runs/ls20-pruned recover=null evaluate=null
"""

REPORT_DESCRIPTION = """\
Regenerate a run's report.md, report.html, figures/ and the model cards of its exported folders from
the stage outputs alone (no model runs), for a finished run or one still under way.

    lorashear report demo-out"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="one command from model to report: run a recipe's stages",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=RUN_DESCRIPTION,
                       epilog=RUN_EPILOG)
    p.add_argument("recipe", help="a YAML recipe file, or the name of a packaged recipe: "
                   f"{', '.join(packaged_recipes())} (docs/recipes.md)")
    add_run_args(p, output_default=None)
    p.set_defaults(handler=run)

    r = sub.add_parser("report", help="regenerate a run's report.md, report.html, figures and model cards (no model runs)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=REPORT_DESCRIPTION)
    r.add_argument("output", type=Path, metavar="OUT", help="a run folder written by `lorashear run`")
    r.set_defaults(handler=report)


def add_run_args(p: argparse.ArgumentParser, output_default: Path | None) -> None:
    """The run folder, --resume, --dtype and the overrides: `lorashear run` and `lorashear demo` alike."""
    if output_default is None:
        p.add_argument("-o", "--output", required=True, type=Path, metavar="OUT", help="run folder")
    else:
        p.add_argument("-o", "--output", default=output_default, type=Path, metavar="OUT",
                       help=f"run folder (default {output_default})")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUT: skip finished stages, resume an interrupted training stage")
    p.add_argument("--dtype", default=None, choices=DTYPES,
                   help="every stage's weights (the recipe's `dtype`, default auto: bfloat16 on a CUDA GPU that "
                        "supports it, else float32); the same as the override dtype=...")
    p.add_argument("overrides", nargs="*", metavar="KEY.SUB=VALUE",
                   help="recipe overrides, e.g. prune.ratio=0.5 recover.tokens=1000 recover=null")


def run(args: argparse.Namespace) -> int:
    overrides = [*args.overrides, *([f"dtype={args.dtype}"] if args.dtype else [])]
    recipe = load_recipe(args.recipe, overrides)
    result = run_recipe(recipe, args.output, resume=args.resume, command=["lorashear", *sys.argv[1:]])
    if not result.finished:
        print(f"stopped early; continue with: lorashear run {args.recipe} -o {args.output} --resume")
    return 0


def report(args: argparse.Namespace) -> int:
    if not (args.output / RECIPE_FILE).is_file():
        raise LorashearError(f"{args.output} is not a run folder (no {RECIPE_FILE}); run `lorashear run` first")
    print(f"wrote {write_report(args.output)}")
    return 0
