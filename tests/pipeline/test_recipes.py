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


def test_the_8b_recipe_is_bf16_checkpointed_and_keeps_saliency_on_one_micro_batch():
    """recipes/lorashear-20-8b.yaml loads with any model and asks for what a 24 GB card needs."""
    from lorashear.importance import ScoreContext

    recipe = load_recipe(RECIPES / "lorashear-20-8b.yaml", ["model=some/model-8b"])
    assert recipe.model == "some/model-8b" and recipe.dtype == "auto"
    prune = recipe.prune("out")
    assert prune.method == "lhspg" and prune.options.gradient_checkpointing == "true"
    # one micro-batch of the period-start saliency (ScoreContext's): its gradients are folded and freed
    assert prune.options.saliency_samples <= ScoreContext.__dataclass_fields__["batch_size"].default
    assert prune.multiple_of == 64
    assert recipe.recover("p", "o", False).gradient_checkpointing == "true"
