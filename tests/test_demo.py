"""`lorashear demo` is `lorashear run demo`: the packaged demo recipe, from any installation."""

from __future__ import annotations

import pytest
import yaml

import lorashear.cli.run_cmd
import lorashear.pipeline
from lorashear import LorashearError
from lorashear.cli import main
from lorashear.pipeline.recipe import PACKAGED, load_recipe, packaged_recipes, recipe_path
from lorashear.prune.api import PruneConfig


def test_demo_runs_the_packaged_demo_recipe_with_overrides(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(lorashear.cli.run_cmd, "run_recipe",  # where `lorashear run` calls it
                        lambda recipe, out, resume=False, log=print, command=None: ran.append((recipe, out, resume))
                        or lorashear.pipeline.RunResult(out, True, [], []))
    assert main(["demo", "-o", str(tmp_path / "d"), "--resume", "recover.tokens=4096"]) == 0
    (recipe, out, resume), = ran
    packaged = yaml.safe_load((PACKAGED / "demo.yaml").read_text())
    assert recipe.sections["prune"] == packaged["prune"] and recipe.model == packaged["model"]
    assert recipe.sections["recover"] == {**packaged["recover"], "tokens": 4096}
    assert out == tmp_path / "d" and resume


def test_recipes_ship_with_the_package_and_resolve_by_name(tmp_path, monkeypatch):
    """The repository's recipes/ is the packaged folder; `demo` and `demo.yaml` name it from anywhere."""
    monkeypatch.chdir(tmp_path)  # no recipes/ here: only the package's
    assert {"demo", "lorashear-20", "lorashear-20-8b"} <= set(packaged_recipes())
    assert recipe_path("demo") == recipe_path("demo.yaml") == PACKAGED / "demo.yaml"
    assert load_recipe("lorashear-20").sections["prune"]["method"] == "lhspg"
    local = tmp_path / "demo.yaml"  # a file of that name wins over the packaged one
    local.write_text("model: m\nprune: {method: random, ratio: 0.3}\n")
    assert recipe_path("demo.yaml").resolve() == local
    with pytest.raises(LorashearError, match="packaged: .*demo"):
        recipe_path("no-such-recipe")
    with pytest.raises(LorashearError, match="recipe not found"):
        recipe_path("elsewhere/demo.yaml")  # a path is a path: not looked up among the packaged names


def test_demo_rejects_bad_settings_before_any_work(capsys, tmp_path):
    assert main(["demo", "-o", str(tmp_path / "d"), "prune.ratio=2"]) == 2
    assert "ratio must be in" in capsys.readouterr().err
    assert main(["demo", "-o", str(tmp_path / "d"), "evaluate.no_such_key=1"]) == 2
    assert "no_such_key" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ratio": 1.5}, "ratio must be in"),
        ({"ratio": 0.0}, "ratio must be in"),
        ({"kinds": ("heads",)}, "unknown structures"),
        ({"kinds": ()}, "no structures"),
        ({"method": "oracle"}, "unknown method"),
    ],
)
def test_prune_config_rejects_bad_input(kwargs, message):
    with pytest.raises(LorashearError, match=message):
        PruneConfig("m", "out", **kwargs)
