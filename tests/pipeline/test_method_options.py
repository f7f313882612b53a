"""Method-specific keys of a recipe's `prune:` section reach the method's own config (how trained methods plug in)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from lorashear.errors import LorashearError
from lorashear.pipeline import recipe_from_dict
from lorashear.prune import METHODS, Method, register_method
from lorashear.prune.methods import _random


@dataclass
class ScheduleOptions:
    periods: int = 5
    every: int = 10


@pytest.fixture
def scheduled_method():
    register_method(Method("scheduled", _random, None, "none", "a test method with options", trained=True,
                           options=ScheduleOptions))
    yield METHODS["scheduled"]
    del METHODS["scheduled"]


def test_extra_prune_keys_become_the_methods_options(scheduled_method):
    """A trained method's flat keys split into its own options and the training run's."""
    recipe = recipe_from_dict({"model": "m", "prune": {"method": "scheduled", "ratio": 0.3, "periods": 2}},
                              ["prune.every=64", "prune.tokens=640"])
    config = recipe.prune("out")
    assert config.ratio == 0.3 and config.method_options == ScheduleOptions(periods=2, every=64)
    assert config.training.tokens == 640


def test_batch_size_and_seed_set_the_training_run_too(scheduled_method):
    """As on the command line: a trained method's `prune.batch_size`/`prune.seed` are the scoring batch and
    seed and also the training run's (the training batch used to stay at its default, 4)."""
    config = recipe_from_dict({"model": "m", "prune": {"method": "scheduled", "batch_size": 2, "seed": 7}}).prune("out")
    assert (config.batch_size, config.seed) == (2, 7)
    assert (config.training.batch_size, config.training.seed) == (2, 7)


def test_unknown_method_option_names_the_known_ones(scheduled_method):
    with pytest.raises(LorashearError, match=r"unknown option\(s\): epochs; known: training .*tokens.*; "
                                             r"method every, periods"):
        recipe_from_dict({"model": "m", "prune": {"method": "scheduled", "epochs": 3}})


def test_one_shot_methods_refuse_extra_keys():
    with pytest.raises(LorashearError, match=r"unknown key\(s\) in 'prune': periods; .*takes no options"):
        recipe_from_dict({"model": "m", "prune": {"method": "taylor", "periods": 3}})


def test_knowledge_from_refuses_an_analysis_of_other_clusters(small_vocab_dirs, tmp_path):
    from lorashear.graph import build_graph
    from lorashear.knowledge import load_knowledge
    from lorashear.models import load_model

    graph = build_graph(load_model(str(small_vocab_dirs["llama"]), device="cpu"))
    saved = {"dense_loss": 1.0, "settings": {"rule": "auto"}, "seconds": 0.0, "unprunable": ["layer0.mlp"],
             "clusters": [{"name": "layer0.mlp", "groups": 3, "deviation": {"0.5": 0.1}, "unprunable": True}]}
    path = tmp_path / "knowledge.json"
    path.write_text(json.dumps(saved))
    with pytest.raises(LorashearError, match="analysed other clusters"):
        load_knowledge(path, graph, ("kv_group", "mlp_channel"))


@pytest.mark.parametrize("method", ["lhspg", "loraprune"])
def test_multiple_of_in_a_recipe_reaches_the_trained_method(method):
    """`prune.multiple_of: 64` was kept by PruneConfig and never reached LHSPG/LoRAPrune's `group_divisible`
    (the CLI's --multiple-of did): a recipe's rows pruned to unrounded widths without a word."""
    config = recipe_from_dict({"model": "m", "prune": {"method": method, "multiple_of": 64}}).prune("out")
    assert config.multiple_of == 64 and config.method_options.group_divisible == 64
    config = recipe_from_dict({"model": "m", "prune": {"method": method, "group_divisible": 8}}).prune("out")
    assert config.multiple_of == 8 and config.method_options.group_divisible == 8
    with pytest.raises(LorashearError, match="multiple_of 64 and group_divisible 8 disagree"):
        recipe_from_dict({"model": "m", "prune": {"method": method, "multiple_of": 64, "group_divisible": 8}})
