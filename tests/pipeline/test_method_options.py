"""A method's options are one dataclass, registered once: its fields are the recipe keys of `prune:` and the
flags of `lorashear prune` (how methods plug in)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field

import pytest

from lorashear.cli import build_parser, main
from lorashear.cli.options import option_flag
from lorashear.errors import LorashearError
from lorashear.pipeline import recipe_from_dict
from lorashear.prune import METHODS, Method, PlanOutcome, TrainedConfig, random_plan, register_method
from lorashear.prune.methods import _random
from lorashear.prune.options import option_names


@dataclass
class ScheduleOptions(TrainedConfig):
    periods: int = field(default=5, metadata={"help": "periods"})
    every: int = field(default=10, metadata={"help": "steps between masks"})


@dataclass
class DrawOptions:
    """A one-shot method's options: the seed of its random draw."""

    draw: int = field(default=0, metadata={"help": "seed of the draw"})


def _drawn(ctx) -> PlanOutcome:
    c = ctx.config
    return PlanOutcome(random_plan(ctx.graph, c.ratio, list(c.kinds), seed=c.options.draw, aliases=ctx.aliases))


@pytest.fixture
def scheduled_method():
    register_method(Method("scheduled", ScheduleOptions, _random, None, "none", "a trained test method"))
    yield METHODS["scheduled"]
    del METHODS["scheduled"]


@pytest.fixture
def drawn_method():
    """A new one-shot method: one config dataclass and a plan, registered here; prune_cmd.py is not touched."""
    register_method(Method("drawn", DrawOptions, _drawn, None, "none", "random groups, drawn with its own seed"))
    yield METHODS["drawn"]
    del METHODS["drawn"]


def prune_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["prune"]


def pruned_config(argv: list[str], monkeypatch):
    """The PruneConfig `lorashear prune argv` builds (prune_model is not run)."""
    seen = []
    monkeypatch.setattr("lorashear.cli.prune_cmd.prune_model", seen.append)  # where `lorashear prune` calls it
    assert main(argv) == 0
    return seen[0]


def test_extra_prune_keys_become_the_methods_options(scheduled_method):
    """A trained method's flat keys are its one options dataclass: its own fields and the training run's."""
    recipe = recipe_from_dict({"model": "m", "prune": {"method": "scheduled", "ratio": 0.3, "periods": 2}},
                              ["prune.every=64", "prune.tokens=640"])
    config = recipe.prune("out")
    assert config.ratio == 0.3 and config.options == ScheduleOptions(periods=2, every=64, tokens=640)


def test_batch_size_and_seed_set_the_training_run_too(scheduled_method):
    """As on the command line: a trained method's `prune.batch_size`/`prune.seed` are the scoring batch and
    seed and also the training run's (the training batch used to stay at its default, 4)."""
    config = recipe_from_dict({"model": "m", "prune": {"method": "scheduled", "batch_size": 2, "seed": 7}}).prune("out")
    assert (config.batch_size, config.seed) == (2, 7)
    assert (config.options.batch_size, config.options.seed) == (2, 7)


def test_an_unknown_prune_key_is_one_error_naming_the_known_ones(scheduled_method):
    with pytest.raises(LorashearError, match=r"unknown key\(s\) in 'prune': epochs; known: batch_size, kinds, "
                                             r".*multiple_of.*; method 'scheduled': .*every, .*periods, .*tokens"):
        recipe_from_dict({"model": "m", "prune": {"method": "scheduled", "epochs": 3}})
    with pytest.raises(LorashearError, match=r"unknown key\(s\) in 'prune': periods; .*method 'taylor': score_options$"):
        recipe_from_dict({"model": "m", "prune": {"method": "taylor", "periods": 3}})
    with pytest.raises(LorashearError, match=r"unknown key\(s\) in 'prune': periods; .*takes no options of its own"):
        recipe_from_dict({"model": "m", "prune": {"method": "random", "periods": 3}})


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
def test_multiple_of_is_one_setting_and_group_divisible_its_old_name(method):
    """`prune.multiple_of` reaches the trained methods (their hooks select with it); `group_divisible`, its old
    name in their flat configs, still reads as it; both given and different is refused."""
    config = recipe_from_dict({"model": "m", "prune": {"method": method, "multiple_of": 64}}).prune("out")
    assert config.multiple_of == 64 and "group_divisible" not in option_names(type(config.options))
    config = recipe_from_dict({"model": "m", "prune": {"method": method, "group_divisible": 8}}).prune("out")
    assert config.multiple_of == 8
    with pytest.raises(LorashearError, match="multiple_of 64 and group_divisible 8 disagree"):
        recipe_from_dict({"model": "m", "prune": {"method": method, "multiple_of": 64, "group_divisible": 8}})


def test_group_divisible_in_an_old_flat_config_means_multiple_of(tmp_path, monkeypatch):
    flat = tmp_path / "old.yaml"
    flat.write_text("periods: 3\ngroup_divisible: 8\n")
    argv = ["prune", "m", "--method", "lhspg", "--ratio", "0.2", "-o", str(tmp_path / "o"), "--config", str(flat)]
    config = pruned_config(argv, monkeypatch)
    assert config.multiple_of == 8 and config.options.periods == 3
    assert pruned_config([*argv, "--group-divisible", "4"], monkeypatch).multiple_of == 4  # the flag's old name too


@pytest.mark.parametrize("method", ["lhspg", "loraprune"])
def test_the_trained_methods_flags_are_their_options_fields(method):
    """Every field of the method's options dataclass is a flag of `lorashear prune` (made from the field); the
    option groups hold exactly the trained methods' fields, less those the command has itself."""
    parser = prune_parser()
    flags = set(parser._option_string_actions)
    config_cls = METHODS[method].config_cls
    fields_flags = {option_flag(config_cls.__dataclass_fields__[name]) for name in option_names(config_cls)}
    assert fields_flags <= flags
    generated = {flag for group in parser._action_groups if group.title.startswith("options of --method")
                 for action in group._group_actions for flag in action.option_strings}
    every_field = {option_flag(m.config_cls.__dataclass_fields__[name]) for m in METHODS.values()
                   for name in option_names(m.config_cls)}
    assert generated == every_field - {"--data", "--seq-len", "--batch-size", "--seed", "--score-option"}
    action = parser._option_string_actions["--tokens"]
    assert action.type is int and "(default 49152)" in action.help
    assert parser._option_string_actions["--lambda-rule"].choices == ("remaining", "constant")


def test_a_new_method_gets_its_flag_and_recipe_key(drawn_method, small_vocab_dirs, tmp_path, monkeypatch, capsys):
    assert "--draw" in prune_parser()._option_string_actions
    assert recipe_from_dict({"model": "m", "prune": {"method": "drawn", "draw": 3}}).prune("o").options == DrawOptions(3)
    argv = ["prune", str(small_vocab_dirs["llama"]), "--method", "drawn", "--ratio", "0.2", "--draw", "3",
            "-o", str(tmp_path / "out")]
    assert main(argv) == 0
    assert json.loads((tmp_path / "out" / "pruning.json").read_text())["settings"] == {"seed": 3}
    capsys.readouterr()
    argv = ["prune", "m", "--method", "taylor", "--ratio", "0.2", "--draw", "3", "-o", str(tmp_path / "x")]
    assert main(argv) == 2
    assert "--draw: not an option of --method taylor; use --method drawn" in capsys.readouterr().err
