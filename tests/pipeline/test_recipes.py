"""The shipped recipes that are variants of one another stay variants (recipes have no includes)."""

from __future__ import annotations

from pathlib import Path

from lorashear.pipeline import load_recipe
from lorashear.train.config import read_recipe

RECIPES = Path(__file__).parents[2] / "recipes"


def test_lorashear_50_is_lorashear_20_at_half_the_parameters():
    """lorashear-50.yaml shares every section but `prune` with lorashear-20.yaml (recipes have no includes); each
    `prune` is what a measured benchmark row ran (tests/test_benchmarks.py), and both load."""
    twenty, fifty = read_recipe(RECIPES / "lorashear-20.yaml"), read_recipe(RECIPES / "lorashear-50.yaml")
    assert (twenty["prune"]["ratio"], fifty["prune"]["ratio"]) == (0.2, 0.5)
    assert {k: v for k, v in fifty.items() if k != "prune"} == {k: v for k, v in twenty.items() if k != "prune"}
    for name, ratio in (("lorashear-20.yaml", 0.2), ("lorashear-50.yaml", 0.5)):
        prune = load_recipe(RECIPES / name).prune("OUT")
        assert prune.ratio == ratio and prune.method == "lhspg"


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
