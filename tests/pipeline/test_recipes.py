"""The shipped recipes that are variants of one another stay variants (recipes have no includes)."""

from __future__ import annotations

from pathlib import Path

from lorashear.pipeline import load_recipe
from lorashear.train.config import read_recipe

RECIPES = Path(__file__).parents[2] / "recipes"


def test_lorashear_50_is_lorashear_20_at_half_the_parameters():
    """lorashear-50.yaml differs from lorashear-20.yaml only in prune.ratio (comments aside), and both load."""
    twenty, fifty = read_recipe(RECIPES / "lorashear-20.yaml"), read_recipe(RECIPES / "lorashear-50.yaml")
    assert (twenty["prune"]["ratio"], fifty["prune"]["ratio"]) == (0.2, 0.5)
    assert {**fifty, "prune": {**fifty["prune"], "ratio": 0.2}} == twenty
    recipe = load_recipe(RECIPES / "lorashear-50.yaml")
    assert recipe.prune("OUT").ratio == 0.5 and recipe.prune("OUT").method == "lhspg"
    assert recipe.sections == load_recipe(RECIPES / "lorashear-20.yaml", ["prune.ratio=0.5"]).sections
