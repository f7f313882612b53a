"""The one-command pipeline: a YAML recipe → analyze → knowledge → prune → recover → evaluate → report.

    lorashear run recipes/demo.yaml -o demo-out [--resume] [prune.ratio=0.3 ...]
    lorashear report demo-out          # regenerate report.md, figures/ and model cards from the files

`load_recipe` maps the recipe onto the stages' own config dataclasses (recipe.py); `run_recipe`
runs the stages in order, each in its own folder, skipping finished ones (runner.py, stages.py);
`write_report` reads the stage outputs back (report.py, card.py).
"""

from lorashear.pipeline.recipe import Recipe, load_recipe, recipe_from_dict
from lorashear.pipeline.report import write_report
from lorashear.pipeline.runner import STAGES, RunResult, run_recipe

__all__ = ["STAGES", "Recipe", "RunResult", "load_recipe", "recipe_from_dict", "run_recipe", "write_report"]
