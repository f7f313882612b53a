"""The published benchmark reports are what the scripts write from their JSON results."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    """Import benchmarks/NAME.py as its own run would: with benchmarks/ on the path (scripts share helpers)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recovery_report_is_rendered_from_its_json():
    """recovery_smollm2.md (quoted in the README) is `markdown()` of recovery_smollm2.json, byte for byte."""
    recovery = _script("recovery")
    results = json.loads((BENCHMARKS / "results" / "recovery_smollm2.json").read_text())
    assert recovery.markdown(results) == (BENCHMARKS / "results" / "recovery_smollm2.md").read_text()
    assert set(results["variants"]) == set(recovery.VARIANTS)  # every variant of the issue was measured


def test_speed_report_is_rendered_from_its_json():
    """speed_smollm2.md (quoted in the README) is `markdown()` of speed_smollm2.json: one alternating comparison."""
    speed = _script("speed")
    results = json.loads((BENCHMARKS / "results" / "speed_smollm2.json").read_text())
    assert speed.markdown(results) == (BENCHMARKS / "results" / "speed_smollm2.md").read_text()
    comparison = results["comparison"]
    assert [m["name"] for m in comparison["models"]] == ["dense", "pruned 20%", "pruned 50%"]
    assert all(len(m["rounds"]["decode"]) == comparison["rounds"] for m in comparison["models"])
    assert comparison["machine"]["load"]  # the load it ran under is recorded with the figures


def test_dense_report_is_rendered_from_its_json():
    """dense_smollm2.md (quoted in the README) is `markdown()` of dense_smollm2.json; each part names its command."""
    dense = _script("dense_baseline")
    results = json.loads((BENCHMARKS / "results" / "dense_smollm2.json").read_text())
    assert dense.markdown(results) == (BENCHMARKS / "results" / "dense_smollm2.md").read_text()
    parts = dense.parts_of(results["settings"])
    assert set(parts) == set(dense.PARTS) and all("benchmarks/dense_baseline.py" in p["command"] for p in parts.values())
    assert results["settings"]["ppl"]["wiki"]["bos"] is not None  # measured with the BOS convention


def test_importance_report_is_rendered_from_its_json():
    """importance_smollm2.md is `markdown()` of its JSON; every measured row names the prune command it ran."""
    importance = _script("importance")
    results = json.loads((BENCHMARKS / "results" / "importance_smollm2.json").read_text())
    assert importance.markdown(results) == (BENCHMARKS / "results" / "importance_smollm2.md").read_text()
    assert "ppl" in results["rows"]["dense"]
    for key, row in results["rows"].items():
        if key != "dense":
            ratio, method, rule = key.split(" ")
            assert f"--method {method} --ratio {float(ratio[:-1]) / 100} --unprunable {rule}" in row["prune"]["command"]


def test_gguf_speed_report_is_rendered_from_its_json():
    """gguf_speed_smollm2.md is `markdown()` of its JSON; every row records its rounds and the load it ran under."""
    gguf_speed = _script("gguf_speed")
    results = json.loads((BENCHMARKS / "results" / "gguf_speed_smollm2.json").read_text())
    assert gguf_speed.markdown(results) == (BENCHMARKS / "results" / "gguf_speed_smollm2.md").read_text()
    assert "benchmarks/gguf_speed.py" in results["command"]
    for key, row in results["rows"].items():
        assert all(len(r) == len(row["rounds"]["dense"]) for r in row["rounds"].values()) and "load average" in row["machine"]
        assert ("prefill_vs_dense" in row["speed"]) == (not key.startswith("dense"))


def test_every_methods_row_is_a_valid_recipe():
    """Each side-by-side row is recipes/lorashear-20.yaml plus its overrides: all load and name the row's method."""
    from lorashear.pipeline.recipe import load_recipe

    methods = _script("methods")
    for name, (_, overrides) in methods.ROWS.items():
        recipe = load_recipe(methods.RECIPE, [*overrides, "prune.ratio=0.5", "evaluate=null"])
        assert not recipe.enabled("evaluate") and recipe.enabled("recover")
        assert recipe.prune("OUT").ratio == 0.5
        assert name.startswith(recipe.prune("OUT").method)


def test_methods_report_is_rendered_from_its_json():
    """methods_smollm2.md is `markdown()` of its JSON (once the script has written one)."""
    methods = _script("methods")
    path = BENCHMARKS / "results" / "methods_smollm2.json"
    if not path.exists():
        path = None
    results = json.loads(path.read_text()) if path else {
        "model": "m", "command": "c", "machine": "x", "limit": 200,
        "rows": {"dense": {"params": 10, "ppl": {"ppl": 2.0}}, "20% taylor-auto": {"run": {"seconds": 5.0, "params": 8}}}}
    text = methods.markdown(results)
    assert text.startswith("# Methods side by side")
    if path:
        assert text == path.with_suffix(".md").read_text()
    else:
        assert "| 20% | taylor-auto | 8 |" in text


def test_real_models_report_is_rendered_from_its_json():
    """real_models.md (quoted in the README) is `markdown()` of real_models.json; every prune row was checked
    against the zeroed dense model and names its command."""
    real = _script("real_models")
    results = json.loads((BENCHMARKS / "results" / "real_models.json").read_text())
    assert real.markdown(results) == (BENCHMARKS / "results" / "real_models.md").read_text()
    assert set(results["models"]) == set(real.MODELS)
    for model in results["models"].values():
        assert model["dense"]["ppl"]["windows"] == 16
        for key, row in model.get("prunes", {}).items():  # rows not run yet are absent
            assert key in real.PRUNES and row["command"].startswith("lorashear prune ")
            assert row["max_abs_logit_delta_vs_zeroed"] <= 1e-3 * row["max_abs_logit"] or "stock" in key
