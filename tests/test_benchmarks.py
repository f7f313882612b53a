"""The published benchmark reports are what render.py writes from the JSON results; the scripts' helpers."""

from __future__ import annotations

import ast
import importlib
import json
import sys
from pathlib import Path

import _common
import gguf_speed
import gpu_smoke
import methods
import prune_cost
import pytest
import real_models
import recovery
import render
import torch_pruning_baseline

from lorashear.evaluate import AVERAGE_METRIC

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_recovery_report_is_rendered_from_its_json():
    """Each recovery section's STEM.md (quoted in the README) is its table rendered from its JSON (render.py), byte for byte."""
    for path in [BENCHMARKS / "results" / f"{stem}.json" for stem, script, _ in render.SECTIONS if script == "recovery"]:
        if path.is_file():  # a section not measured yet renders as pending
            assert render.recovery_markdown(json.loads(path.read_text())) == path.with_suffix(".md").read_text(), path.name
    results = json.loads((BENCHMARKS / "results" / "recovery_smollm2.json").read_text())
    assert set(results["variants"]) >= set(recovery.ISSUE_VARIANTS)  # every variant of the issue was measured


def test_speed_report_is_rendered_from_its_json():
    """speed_smollm2.md (quoted in the README) is render.py's table of speed_smollm2.json: one alternating comparison."""
    results = json.loads((BENCHMARKS / "results" / "speed_smollm2.json").read_text())
    assert render.speed_markdown(results) == (BENCHMARKS / "results" / "speed_smollm2.md").read_text()
    comparison = results["comparison"]
    assert [m["name"] for m in comparison["models"]] == ["dense", "pruned 20%", "pruned 50%"]
    assert all(len(m["rounds"]["decode"]) == comparison["rounds"] for m in comparison["models"])
    assert comparison["machine"]["load"]  # the load it ran under is recorded with the figures


def test_dense_report_is_rendered_from_its_json():
    """dense_smollm2.md (quoted in the README) is render.py's table of dense_smollm2.json; each part names its command."""
    results = json.loads((BENCHMARKS / "results" / "dense_smollm2.json").read_text())
    assert render.dense_markdown(results) == (BENCHMARKS / "results" / "dense_smollm2.md").read_text()
    parts = _common.dense_parts(results["settings"])
    assert set(parts) == set(_common.DENSE_PARTS) and all("benchmarks/dense_baseline.py" in p["command"] for p in parts.values())
    assert results["settings"]["ppl"]["wiki"]["bos"] is not None  # measured with the BOS convention


def test_importance_report_is_rendered_from_its_json():
    """importance_smollm2.md is render.py's table of its JSON; every measured row names the prune command it ran."""
    results = json.loads((BENCHMARKS / "results" / "importance_smollm2.json").read_text())
    assert render.importance_markdown(results) == (BENCHMARKS / "results" / "importance_smollm2.md").read_text()
    assert "ppl" in results["rows"]["dense"]
    for key, row in results["rows"].items():
        if key != "dense":
            ratio, method, rule = key.split(" ")
            assert f"--method {method} --ratio {float(ratio[:-1]) / 100} --unprunable {rule}" in row["prune"]["command"]


def test_gguf_speed_report_is_rendered_from_its_json():
    """gguf_speed_smollm2.md is render.py's table of its JSON; every row records its rounds and the load it ran under."""
    results = json.loads((BENCHMARKS / "results" / "gguf_speed_smollm2.json").read_text())
    assert render.gguf_speed_markdown(results) == (BENCHMARKS / "results" / "gguf_speed_smollm2.md").read_text()
    assert "benchmarks/gguf_speed.py" in results["command"]
    assert gguf_speed.row_key(0.2, "uniform", "f16", 64) == "20% uniform m64 f16"
    assert gguf_speed.row_key(0.2, "uniform", "f16") == "20% uniform f16" and gguf_speed.row_key(0, "", "f16") == "dense f16"
    for key, row in results["rows"].items():
        assert all(len(r) == len(row["rounds"]["dense"]) for r in row["rounds"].values()) and "load average" in row["machine"]
        assert ("prefill_vs_dense" in row["speed"]) == (not key.startswith("dense"))
    key, row = next(iter(results["rows"].items()))  # a row timed with --no-repack says so; earlier rows ran with it
    assert "not repacked" not in render.gguf_speed_markdown({**results, "rows": {key: row}})
    assert "; weights not repacked (--no-repack) |" in render.gguf_speed_markdown({**results, "rows": {key: {**row, "repack": False}}})


def test_gguf_speed_times_given_folders_by_their_label(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert gguf_speed.parse_folder(f"20% lhspg-auto-m64 seed=1={tmp_path}") == ("20% lhspg-auto-m64 seed=1", str(tmp_path))
    for bad in (str(tmp_path), f"x={tmp_path / 'missing'}", f"={tmp_path}"):
        with pytest.raises(SystemExit, match="LABEL=PATH"):
            gguf_speed.parse_folder(bad)


def test_every_methods_row_is_a_valid_recipe():
    """Each side-by-side row is benchmarks/methods_base.yaml plus its overrides: all load and name the row's method."""
    from lorashear.pipeline.recipe import load_recipe

    for name, (_, overrides) in _common.METHOD_ROWS.items():
        recipe = load_recipe(_common.METHODS_RECIPE, [*overrides, "prune.ratio=0.5", "evaluate=null"])
        assert not recipe.enabled("evaluate") and recipe.enabled("recover")
        assert recipe.prune("OUT").ratio == 0.5
        assert name.startswith(recipe.prune("OUT").method)


def resolved(recipe) -> tuple:
    """Everything a pipeline run takes from a recipe, as the stages' config objects."""
    return (recipe.model, recipe.dtype, recipe.analyze(), recipe.calibration(), recipe.knowledge(),
            recipe.prune("OUT"), recipe.recover("PRUNED", "OUT", resume=False), recipe.evaluate())


@pytest.mark.parametrize("name", list(_common.RECIPE_ROWS))
def test_each_shipped_default_model_recipe_is_a_measured_row(name):
    """recipes/lorashear-20.yaml (-50) runs what its benchmark row measured: the base recipe with the row's
    overrides resolves to the same stage configs (a recipe that drifts from the numbers fails here)."""
    from lorashear.pipeline.recipe import PACKAGED, load_recipe

    ratio, row = _common.RECIPE_ROWS[name]
    shipped = load_recipe(PACKAGED / name)
    assert resolved(shipped) == resolved(load_recipe(_common.METHODS_RECIPE, [*_common.METHOD_ROWS[row][1],
                                                                               f"prune.ratio={ratio}"]))
    assert shipped.prune("OUT").ratio == ratio


def test_recovery_benchmark_resumes_only_a_run_with_the_same_settings(tmp_path, monkeypatch):
    """recovery.py: a rerun with the same settings (other --variants allowed) continues the results file;
    different settings start afresh."""
    import argparse

    monkeypatch.setattr(recovery, "RESULTS", tmp_path)
    args = argparse.Namespace(stem="r", tokens=10, variants=["dynamic"], workdir="w")
    assert recovery.earlier_results(args) is None
    (tmp_path / "r.json").write_text(json.dumps({"settings": {"stem": "r", "tokens": 10, "variants": ["uniform"]},
                                                 "variants": {"uniform": {}}}))
    assert recovery.earlier_results(args)["variants"] == {"uniform": {}}
    assert recovery.earlier_results(argparse.Namespace(stem="r", tokens=11, variants=[], workdir="w")) is None


def recovery_writing_to(tmp_path, monkeypatch):
    """benchmarks/recovery.py with its results (JSON, and Markdown rendered as "") going to tmp_path."""
    monkeypatch.setattr(recovery, "RESULTS", tmp_path)
    monkeypatch.setattr(recovery, "recovery_markdown", lambda results: "")
    monkeypatch.setattr(recovery, "write_results", lambda stem, data, md: (tmp_path / f"{stem}.json").write_text(
        json.dumps(data)))
    return recovery


def test_recovery_saves_through_write_results_so_benchmarks_md_follows(tmp_path, monkeypatch):
    """recovery.py's save goes through render.write_results like every other benchmark, which
    re-renders BENCHMARKS.md (before, it wrote its JSON and Markdown itself and BENCHMARKS.md went stale)."""
    recovery = recovery_writing_to(tmp_path, monkeypatch)
    saved = []
    monkeypatch.setattr(recovery, "recovery_markdown", lambda results: "# r")
    monkeypatch.setattr(recovery, "write_results", lambda stem, data, md: saved.append((stem, data, md)))
    results = {"settings": {"stem": "r"}, "variants": {}}
    recovery.save(results)
    assert saved == [("r", results, "# r")] and list(tmp_path.iterdir()) == []


def test_recovery_run_keeps_the_variants_an_add_to_run_saved_alongside(tmp_path, monkeypatch):
    """A run and an `--add-to` run share the results file: the run skips a variant the other saved, and its
    saves keep the other's variants (before, each save wrote the run's own in-memory variants only)."""
    import argparse

    recovery = recovery_writing_to(tmp_path, monkeypatch)
    ran = []
    monkeypatch.setattr(recovery, "recover_variant", lambda name, *_: ran.append(name) or {"folder": name})
    monkeypatch.setattr(recovery, "evaluate_folder", lambda folder, args: {"of": folder})
    results = {"settings": {"stem": "r"}, "pruned": {}, "variants": {"dynamic": {}}}
    recovery.save(results)
    alongside = {**results, "variants": {"dynamic": {}, "uniform+kd": {"by": "add-to"}}}
    recovery.save(alongside)  # what `--add-to ... --variants uniform+kd` wrote while the run went on
    args = argparse.Namespace(variants=["dynamic", "uniform", "uniform+kd"])
    recovery.finish(results, tmp_path / "pruned", tmp_path / "work", args, started=0.0)
    assert ran == ["uniform"]
    saved = json.loads((tmp_path / "r.json").read_text())["variants"]
    assert saved == {"dynamic": {}, "uniform+kd": {"by": "add-to"}, "uniform": {"folder": "uniform", "evaluate": {"of": "uniform"}}}


def test_recovery_wall_time_adds_up_over_resumed_invocations(tmp_path, monkeypatch):
    """A resumed recovery.py run adds its seconds to the earlier invocations' (before, the table's "wall time
    of the first command" was the latest invocation's alone), and the report says how many invocations."""
    import argparse
    import time

    recovery = recovery_writing_to(tmp_path, monkeypatch)
    monkeypatch.setattr(recovery, "recover_variant", lambda name, *_: {"folder": name})
    monkeypatch.setattr(recovery, "evaluate_folder", lambda folder, args: {})
    results = {"settings": {"stem": "r"}, "pruned": {}, "variants": {"dynamic": {}}, "seconds": 100.0}
    args = argparse.Namespace(variants=["dynamic", "uniform"])
    recovery.finish(results, tmp_path / "pruned", tmp_path / "work", args, started=time.time() - 5)
    assert 105.0 <= results["seconds"] < 110.0
    assert "over 2 invocations" in render.wall_time_line({"seconds": 105.0, "invocations": 2})
    assert render.wall_time_line({"seconds": 105.0}) == "Wall time of the first command: 105.0 s."


def test_methods_report_is_rendered_from_its_json():
    """methods_smollm2.md is render.py's table of its JSON (once the script has written one)."""
    path = BENCHMARKS / "results" / "methods_smollm2.json"
    if not path.exists():
        path = None
    results = json.loads(path.read_text()) if path else {
        "model": "m", "command": "c", "machine": "x", "limit": 200,
        "rows": {"dense": {"params": 10, "ppl": {"ppl": 2.0}}, "20% taylor-auto": {"run": {"seconds": 5.0, "params": 8}}}}
    text = render.methods_markdown(results)
    assert text.startswith("# Methods side by side")
    if path:
        assert text == path.with_suffix(".md").read_text()
    else:
        assert "| 20% | taylor-auto | 8 |" in text


def test_recovery_names_a_given_pruned_folder(tmp_path):
    """`recovery.py --pruned FOLDER` describes the folder from its pruning.json (method, ratio, knowledge rule)."""
    (tmp_path / "pruning.json").write_text(json.dumps({"method": "lhspg", "ratio": 0.2, "knowledge": {"rule": "auto"}}))
    given = recovery.given_pruning(tmp_path)
    assert given["ratio"] == 0.2 and "lhspg, ratio 0.2, knowledge rule auto" in given["command"]
    (tmp_path / "pruning.json").write_text(json.dumps({"method": "taylor", "ratio": 0.5, "knowledge": None}))
    assert "knowledge rule none" in recovery.given_pruning(tmp_path)["command"]
    assert render.pruned_by({"pruning": recovery.given_pruning(tmp_path)}) == "taylor pruning with the none knowledge rule"
    assert render.pruned_by({"pruning": {"note": _common.RANDOM_PRUNING_NOTE}}) == "random structured pruning"
    assert render.random_pruned({"pruning": {"note": _common.RANDOM_PRUNING_NOTE}})
    assert not render.random_pruned({"pruning": recovery.given_pruning(tmp_path)})


def test_recovery_average_without_boolq_uses_each_tasks_average_metric():
    ev = {"tasks": {"boolq": {"acc": 0.9, "acc_norm": 0.9}, "piqa": {"acc": 0.1, "acc_norm": 0.6},
                    "winogrande": {"acc": 0.5, "acc_norm": 0.0}},
          "avg_metric": {"boolq": "acc", "piqa": "acc_norm", "winogrande": "acc"}}
    assert render.average_without_boolq(ev) == (0.6 + 0.5) / 2


def test_recovery_report_names_a_variant_that_splits_the_budget_otherwise():
    variants = {name: {"overrides": overrides} for name, overrides in recovery.VARIANTS.items()}
    assert render.other_splits({"variants": variants}) == "; dynamic-stage1: 100% pretraining-like text"
    assert render.other_splits({"variants": {"dynamic": variants["dynamic"]}}) == ""


def test_prune_cost_rows_share_the_micro_batch_and_report_memory_against_taylor():
    """prune_cost.py: every row runs 4 x 256 micro-batches; trained rows get --tokens; memory is shown × taylor."""
    for name in prune_cost.ROWS:
        flags = prune_cost.row_args(name, 999)
        assert flags[flags.index("--batch-size") + 1] == "4" and flags[flags.index("--seq-len") + 1] == "256"
        assert ("--tokens" in flags) == (name != "taylor")
    assert prune_cost.row_args("lhspg-product", 9)[:4] == ["--method", "lhspg", "--saliency", "lhspg"]
    rows = {"taylor": {"peak_rss_mb": 4000, "seconds": 9.0, "load_avg": 1.0, "command": "c"},
            "loraprune": {"peak_rss_mb": 2000, "seconds": 5.0, "load_avg": 1.0, "command": "c", "train_tokens_per_s": 7}}
    text = render.prune_cost_markdown({"model": "m", "command": "x", "machine": "y", "rows": rows})
    assert "| loraprune | 2,000 | 0.50 | 5.0 | 7 |  |" in text


def test_prune_cost_times_saliency_window_steps_apart():
    """prune_cost.throughput: the median tokens/s of a step log, and with saliency windows also of the window
    steps and the others, shown as one column."""
    log = [{"tokens_per_s": t, "saliency_window": w} for t, w in [(10, False), (6, True), (12, False), (4, True),
                                                                  (8, True)]]
    timed = prune_cost.throughput(log)
    assert timed == {"train_tokens_per_s": 8, "window_steps": 3, "window_tokens_per_s": 6, "other_tokens_per_s": 11}
    assert prune_cost.throughput([{"tokens_per_s": 5}, {"tokens_per_s": 7}]) == {"train_tokens_per_s": 6}
    row = {"peak_rss_mb": 1, "seconds": 1.0, "load_avg": 1.0, "command": "c", **timed}
    text = render.prune_cost_markdown({"model": "m", "command": "x", "machine": "y", "rows": {"lhspg-steps4": row}})
    assert "| 8 | 6 / 11.0 (3 steps in windows) |" in text


def test_run_child_measures_a_child_and_stops_on_its_failure(tmp_path):
    """_common.run_child: the command with OUT for the folder, seconds, peak RSS; exit != 0 → SystemExit."""
    row = _common.run_child(["-m", "lorashear", "analyze", "--help"], tmp_path)
    assert row["command"] == "lorashear analyze --help" and row["seconds"] > 0 and row["peak_rss_mb"] > 0
    with pytest.raises(SystemExit, match=r"lorashear prune .* failed \(exit 2\)"):
        _common.run_child(["-m", "lorashear", "prune", str(tmp_path / "no-model"), "-o", str(tmp_path / "out")],
                          tmp_path / "out")


def test_methods_margin_kept_and_speed_columns():
    """Margin kept is (avg − chance) / (dense − chance) with chance from the tasks' answer counts; speed-ups
    are the pruned folder's paired ratios to dense."""
    assert abs(render.chance_average() - (3 * 0.5 + 4 * 0.25) / 7) < 1e-3  # 2 choices ×3 tasks, 4 choices ×4
    chance = render.chance_average()
    assert render.margin_kept(chance, 0.6) == 0 and render.margin_kept(0.6, 0.6) == 1
    assert render.margin_kept(None, 0.6) is None
    spread = {"median": 1.25, "min": 1.1, "max": 1.3}
    results = {"model": "m", "command": "c", "machine": "x", "limit": 200, "rows": {
        "dense": {"params": 10, "tasks": {"avg": 0.55}},
        "50% torch-pruning": {"run": {"seconds": 5.0, "params": 5}, "pruned": {"tasks": {"avg": chance}},
                              "recovered": {"tasks": {"avg": 0.45}},
                              "speed": {"prefill_vs_dense": spread, "decode_vs_dense": spread}}}}
    line = next(line for line in render.methods_markdown(results).splitlines() if "| torch-pruning |" in line)
    margin = 100 * (0.45 - chance) / (0.55 - chance)
    assert f"| 0.00 / {margin:.2f} | 1.25× (1.10–1.30) | 1.25× (1.10–1.30) |" in line and "Torch-Pruning" in line
    assert "| boolq |" not in render.methods_markdown(results)  # no per-task scores yet: no per-task table
    assert "invocations" not in line
    results["rows"]["50% torch-pruning"]["run"]["invocations"] = 2  # stopped and resumed: the time is partial
    line = next(line for line in render.methods_markdown(results).splitlines() if "| torch-pruning |" in line)
    assert "| 5 (0 / 0), the last of 2 invocations only |" in line
    results["rows"]["50% torch-pruning"]["run"]["resumed_stages"] = ["prune"]  # its seconds: the last attempt's
    line = next(line for line in render.methods_markdown(results).splitlines() if "| torch-pruning |" in line)
    assert "| 5 (0 / 0), the last of 2 invocations only (prune resumed: its last attempt) |" in line
    seven = {task: 0.5 for task in AVERAGE_METRIC}
    results["rows"]["50% torch-pruning"]["recovered"]["tasks"] = {"avg": 0.5, "tasks": {**seven, "piqa": 0.625}}
    text = render.methods_markdown(results)
    assert "| ratio | row | model | boolq | piqa | hellaswag |" in text
    assert "| 50% | torch-pruning | recovered | 50.00 | 62.50 | 50.00 |" in text
    assert text.splitlines()[-1].endswith("| 50.00 | 52.08 |")  # average; without boolq: (5 × 50 + 62.5) / 6


def test_task_average_without_boolq():
    """render.average_without: the mean of the other tasks; None before any task score."""
    tasks = {"avg": 0.4, "tasks": {"boolq": 0.9, "piqa": 0.5, "hellaswag": 0.3}}
    assert render.average_without(tasks) == 0.4 and render.average_without(tasks, "piqa") == 0.6
    assert render.average_without(None) is None and render.average_without({"avg": 0.5}) is None
    row = {"dense": {"params": 10, "ppl": {"ppl": 2.0}, "tasks": tasks}}
    text = render.importance_markdown({"model": "m", "command": "c", "machine": "x", "limit": 200, "rows": row})
    assert "| 7-task avg | 6-task avg (no boolq) |" in text and "| 2.00 | 40.00 | 40.00 |" in text


def test_methods_rows_run_at_50_percent():
    """A 50% row is the recipe with prune.ratio=0.5 (recipes/lorashear-50.yaml); the baseline gets --ratio 0.5."""
    out = Path("/w/50-x")
    assert methods.row_argv(0.5, "torch-pruning", out) == ["benchmarks/torch_pruning_baseline.py", "--ratio", "0.5",
                                                            "-o", str(out)]
    argv = methods.row_argv(0.5, "taylor-auto", out)
    assert argv[:4] == ["-m", "lorashear", "run", "benchmarks/methods_base.yaml"] and "prune.ratio=0.5" in argv
    assert _common.method_row_key(0.5, "lhspg-auto") == "50% lhspg-auto"
    # Trained rows checkpoint their training often enough to resume (the default, 200 steps, never came on a CPU).
    assert not any(a.startswith("prune.checkpoint_every=") for a in argv)
    assert f"prune.checkpoint_every={methods.TRAINED_CHECKPOINT_EVERY}" in methods.row_argv(0.2, "loraprune-fixed", out)
    assert set(_common.ALL_METHOD_ROWS) == set(_common.METHOD_ROWS) | {"torch-pruning"}


def test_methods_rows_share_an_equal_knowledge_analysis(tmp_path):
    """A new row copies a finished row's analyze/knowledge stages when its analysis settings are equal (LHSPG's
    variants probe with the same criterion), never when they differ (Taylor probes with Taylor) or it has none."""
    done = tmp_path / "20-lhspg-auto"
    for stage in ("01-analyze", "02-knowledge"):
        (done / stage).mkdir(parents=True)
        (done / stage / "DONE").write_text("{}")
    (done / "02-knowledge" / "knowledge.json").write_text('{"verdict": 1}')
    (done / "recipe.yaml").write_text(methods.row_recipe(0.2, "lhspg-auto").to_yaml())
    fade = tmp_path / "20-lhspg-fade"
    assert methods.share_analysis(0.2, "lhspg-fade", fade) == "20-lhspg-auto"
    assert (fade / "02-knowledge" / "knowledge.json").read_text() == '{"verdict": 1}'
    assert (fade / "01-analyze" / "DONE").is_file()
    assert (fade / "recipe.yaml").read_text() == methods.row_recipe(0.2, "lhspg-fade").to_yaml()
    assert methods.share_analysis(0.2, "taylor-auto", tmp_path / "20-taylor-auto") is None
    assert methods.share_analysis(0.2, "random", tmp_path / "20-random") is None
    # the probe ratios are the analysis's own (not the target's): the 50% row's analysis is the same one
    assert methods.share_analysis(0.5, "lhspg-auto", tmp_path / "50-lhspg-auto") == "20-lhspg-auto"
    assert not (tmp_path / "20-taylor-auto").exists()


def test_torch_pruning_baseline_prunes_then_recovers_a_tiny_llama(small_vocab_dirs, tmp_path):
    """TP's Taylor pruning leaves a folder load_model reloads, ~ratio smaller, finite; the recipe's recovery follows
    in `lorashear run`'s layout (what methods.py scores)."""
    import torch

    from lorashear.data import load_documents
    from lorashear.models import count_parameters, load_model

    stories = tmp_path / "stories.txt"
    stories.write_text("\n\n".join(load_documents("tiny-stories")[:40]))
    tiny = [f"model={small_vocab_dirs['llama']}", "calibration.data=[tiny-stories]", "calibration.samples=4",
            "calibration.seq_len=32", "recover.tokens=128", "recover.seq_len=32", "recover.batch_size=2",
            "recover.eval_sequences=2", f"recover.data=[{stories}]", "recover.stage_split=1"]
    out = tmp_path / "tp"

    def killed(config):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:  # stopped in recovery: the finished prune's seconds are kept
        patch.setattr("lorashear.recover.recover", killed)
        with pytest.raises(KeyboardInterrupt):
            torch_pruning_baseline.run(0.25, out, overrides=tiny)
    kept = json.loads((out / "run.json").read_text())
    assert set(kept["seconds"]) == {"prune"} and len(kept["invocations"]) == 1
    log = torch_pruning_baseline.run(0.25, out, overrides=tiny)
    assert set(log["seconds"]) == {"prune", "recover"} and len(log["invocations"]) == 2 and log["resumed"] == []
    assert log["seconds"]["prune"] == kept["seconds"]["prune"]  # not pruned again
    dense = load_model(str(small_vocab_dirs["llama"]), device="cpu")
    record = json.loads((out / "03-prune" / "model" / "pruning.json").read_text())
    for stage in ("03-prune", "04-recover"):
        model = load_model(str(out / stage / "model"), device="cpu")
        assert count_parameters(model) == record["params_after"] < count_parameters(dense)
        assert model.config.hidden_size < dense.config.hidden_size  # TP cut the residual width
        assert torch.isfinite(model(torch.arange(12)[None]).logits).all()
    # widths move in steps of round_to (4 of 64 channels here), so the count lands near, not on, the ratio
    assert abs(record["achieved_ratio"] - 0.25) < 0.04 and record["round_to"] == 4 and record["method"] == "torch-pruning"
    # methods.py's speed part times that folder against the dense model
    speed = methods.time_row(dense, out / "03-prune" / "model", rounds=1)
    assert speed["prefill_vs_dense"]["median"] > 0 and speed["decode_vs_dense"]["median"] > 0
    assert speed["params"] == record["params_after"]  # what was timed, to compare with the scored run's


def test_gguf_speed_times_files_side_by_side_without_repacking(small_vocab_dirs, tmp_path):
    """gguf_speed.py's timing loop on two tiny GGUF files, llama.cpp's weight repacking off (--no-repack): one
    warm-up round, then every file once per round, each round's prefill and decode tok/s and the load around it."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: make test installs it")
    from lorashear.deploy import export_gguf

    files = {name: tmp_path / f"{name}.gguf" for name in ("dense", "pruned")}
    for path in files.values():
        export_gguf(str(small_vocab_dirs["llama"]), path, dtype="f32")
    per_round, load = gguf_speed.time_side_by_side(files, list(range(1, 33)), rounds=2, threads=1, repack=False)
    assert set(per_round) == set(files) and len(load) == 4  # before, and after each of 1 warm-up + 2 rounds
    assert all(len(rounds) == 2 and all(r["prefill"] > 0 and r["decode"] > 0 for r in rounds) for rounds in per_round.values())


def test_benchmarks_md_is_rendered_from_the_committed_results():
    """BENCHMARKS.md (linked from the README) is what render.py renders from benchmarks/results/*.json;
    every planned methods row is listed, measured or pending, and every section names its command."""
    text = render.render()
    assert text == (BENCHMARKS.parent / "BENCHMARKS.md").read_text(), "rerun benchmarks/render.py"
    for ratio in ("20%", "50%"):
        assert f"| {ratio} | torch-pruning |" in text and f"| {ratio} | lhspg-auto |" in text
    measured = [stem for stem, _, _ in render.SECTIONS if (BENCHMARKS / "results" / f"{stem}.json").is_file()]
    assert text.count("Produced by: ") == len(measured) and "Hardware: " in text
    assert text.count("has not been written yet") == len(render.SECTIONS) - len(measured)
    assert "(BENCHMARKS.md)" in (BENCHMARKS.parent / "README.md").read_text()


def test_readme_headline_table_is_rendered_from_the_methods_results():
    """The README's results table is what render.py makes of methods_smollm2.json (rerun it after new rows)."""
    readme = (BENCHMARKS.parent / "README.md").read_text()
    assert render.readme_with_headline(readme, render.headline()) == readme, "rerun benchmarks/render.py"
    assert "| LoRAShear's LHSPG (Wanda-SP saliency) + recovery |" in readme


def test_headline_shows_mean_and_sd_over_seeds_and_pending_rows():
    def row(ppl_pruned, ppl_recovered, avg):
        tasks = {"avg": avg, "tasks": {"boolq": 0.0, "piqa": avg}}
        return {"run": {"seconds": 1.0}, "pruned": {"ppl": {"ppl": ppl_pruned}},
                "recovered": {"ppl": {"ppl": ppl_recovered}, "tasks": tasks}}

    results = {"model": "m", "command": "c", "machine": "x", "limit": 200, "rows": {
        "dense": {"ppl": {"ppl": 20.0}, "tasks": {"avg": 0.5, "tasks": {"boolq": 0.5, "piqa": 0.5}}},
        "20% lhspg-auto": row(40.0, 36.0, 0.40), "20% lhspg-auto seed=1": row(42.0, 38.0, 0.42)}}
    text = render.headline_markdown(results)
    line = next(li for li in text.splitlines() if li.startswith("| LoRAShear's LHSPG (Taylor saliency)"))
    assert "| 41.00 ± 1.41 → 37.00 ± 1.41 | 41.00 ± 1.41 |" in line and line.endswith("| pending | pending |")
    assert "Dense: wiki PPL 20.00, six-task average 50.00" in text


def test_seed_gaps_in_pooled_sd_and_welch_t():
    def row(ppl):
        return {"run": {}, "recovered": {"ppl": {"ppl": ppl}}}

    results = {"rows": {"20% a": row(38.0), "20% a seed=1": row(40.0), "20% b": row(36.0), "20% b seed=1": row(36.0),
                        "20% c": row(1.0), "50% a": row(9.0), "50% a seed=1": row(9.5)}}
    lines = render.seed_gaps(results)
    # a: mean 39, variance 2; b: mean 36, variance 0 -> pooled sd 1, Welch t 3 / sqrt(2 / 2) = 3
    assert lines[-1] == "| 20% | a | b | +3.00 | 1.00 | +3.00 | +3.00 |" and len(lines) == 6  # c and 50% have no pair
    assert render.seed_gaps({"rows": {"20% a": row(1.0)}}) == []


def test_benchmarks_md_marks_unmeasured_methods_rows_pending():
    results = render.methods_results({"model": "m", "command": "c", "machine": "x", "limit": 200,
                                      "rows": {"dense": {"params": 10}, "20% random": {"run": {"seconds": 1.0, "params": 8}}}})
    text = render.methods_markdown(results)
    assert "| 20% | random | 8 |" in text
    pending = [line for line in text.splitlines() if line.endswith("|") and "| pending |" in line]
    assert len(pending) == 2 * len(_common.ALL_METHOD_ROWS) - 1  # all planned rows but the measured one


def test_every_benchmark_write_refreshes_benchmarks_md(tmp_path, monkeypatch):
    """write_results (every benchmark's save) writes NAME.json/.md and BENCHMARKS.md again."""
    monkeypatch.setattr(render, "RESULTS", tmp_path)
    monkeypatch.setattr(render, "OUTPUT", tmp_path / "BENCHMARKS.md")
    readme = (BENCHMARKS.parent / "README.md").read_text()
    render.write_results("probe", {"a": 1}, "# probe\n")
    assert (BENCHMARKS.parent / "README.md").read_text() == readme  # the repository's README is left alone
    assert json.loads((tmp_path / "probe.json").read_text()) == {"a": 1} and (tmp_path / "probe.md").is_file()
    assert (tmp_path / "BENCHMARKS.md").read_text() == render.render()


def test_real_models_report_is_rendered_from_its_json():
    """real_models.md (quoted in the README) is `markdown()` of real_models.json; every prune row was checked
    against the zeroed dense model and names its command."""
    results = json.loads((BENCHMARKS / "results" / "real_models.json").read_text())
    assert real_models.markdown(results) == (BENCHMARKS / "results" / "real_models.md").read_text()
    assert set(results["models"]) == set(real_models.MODELS)
    for model in results["models"].values():
        assert model["dense"]["ppl"]["windows"] == 16
        for key, row in model.get("prunes", {}).items():  # rows not run yet are absent
            assert key in real_models.PRUNES and row["command"].startswith("lorashear prune ")
            assert row["max_abs_logit_delta_vs_zeroed"] <= 1e-3 * row["max_abs_logit"] or "stock" in key


def test_methods_runs_of_different_rows_fill_one_table(tmp_path, monkeypatch):
    """methods.merge_row re-reads the results file before writing a row: two processes filling different rows
    (e.g. `--rows lhspg-auto` and `--rows taylor-auto-150k` side by side) keep each other's rows."""
    written = {}
    monkeypatch.setattr(methods, "RESULTS", tmp_path)
    monkeypatch.setattr(methods, "write_results", lambda stem, data, md: (tmp_path / f"{stem}.json").write_text(
        json.dumps(data)) or written.setdefault("md", md))
    header = {"command": "c", "machine": "x", "limit": 200}
    first = methods.merge_row("t", header)  # nothing on disk yet: an empty table
    methods.merge_row("t", header, "20% lhspg-auto", {"run": {"seconds": 1.0, "params": 8}})
    methods.merge_row("t", header, "20% taylor-auto-150k", {"run": {"seconds": 2.0, "params": 8}})
    rows = methods.merge_row("t", header)["rows"]
    assert first["rows"] == {} and list(rows) == ["20% lhspg-auto", "20% taylor-auto-150k"]
    assert rows["20% lhspg-auto"] == {"run": {"seconds": 1.0, "params": 8}}  # no row-level command: only the parts'
    # each part keeps the command that measured it (a row's parts may come from several runs)
    assert methods.stamped({"ppl": 9.0}, header) == {"ppl": 9.0, "benchmark_command": "c"}


def test_methods_times_a_gone_rows_prune_again_without_rerunning_its_scores(tmp_path, monkeypatch):
    """`--parts speed` of a row whose folders are gone (another session's workdir): its scores stay; the row's
    pipeline runs again to its prune stage only (recover=null) in a folder of its own, and that pruned folder
    is timed, marked as a re-run's in the table (before, the row was reset to run again and nothing ran)."""
    row = {"run": {"seconds": 1.0}, "pruned": {"ppl": {"ppl": 41.7}}, "recovered": {"ppl": {"ppl": 37.0}}}
    gone = tmp_path / "20-lhspg-auto"
    assert methods.again_if_gone(row, gone, ["speed"]) is row
    assert methods.row_overrides(0.2, "lhspg-auto", prune_only=True)[-1] == "recover=null"
    assert not methods.row_recipe(0.2, "lhspg-auto", prune_only=True).enabled("recover")
    ran = []
    monkeypatch.setattr(methods, "run_child", lambda argv, out, cwd=None: ran.append(argv) or {"command": "c"})
    folder, command = methods.folder_to_time(0.2, "lhspg-auto", gone)
    assert folder == tmp_path / "20-lhspg-auto-prune-only" / "03-prune" / "model" and command == "c"
    assert "recover=null" in ran[0] and ran[0][-2:] == [str(tmp_path / "20-lhspg-auto-prune-only"), "--resume"]
    with pytest.raises(SystemExit, match="torch-pruning"):
        methods.folder_to_time(0.2, "torch-pruning", tmp_path / "20-torch-pruning")
    (gone / "03-prune" / "model").mkdir(parents=True)
    assert methods.folder_to_time(0.2, "lhspg-auto", gone) == (gone / "03-prune" / "model", None)
    spread = {"median": 1.2, "min": 1.1, "max": 1.3}
    row["speed"] = {"prefill_vs_dense": spread, "pruned_again": "c"}
    assert render.speedup(row, "prefill") == "1.20× (1.10–1.30)†"
    row["run"]["params"] = row["speed"]["params"] = 1_000  # the re-run pruned to the scored run's size
    assert render.speedup(row, "prefill") == "1.20× (1.10–1.30)†"
    row["speed"]["params"] = 1_024  # it did not: the table says what was timed
    assert render.speedup(row, "prefill") == "1.20× (1.10–1.30)† (1,024 params timed)"


def test_methods_reruns_a_row_whose_folders_are_gone_and_reuses_the_dense_scores(tmp_path):
    """A row measured in another session (its pipeline folders gone) still missing a score must run again;
    the dense model's scores come from importance.py's identical measurement when its settings match."""
    import argparse

    row = {"run": {"seconds": 1.0}, "pruned": {"ppl": {"ppl": 41.7}}, "recovered": {"ppl": {"ppl": 37.0}}}
    assert methods.missing_scores(row, ["run", "ppl", "tasks"]) and not methods.missing_scores(row, ["run", "ppl"])
    assert methods.missing_scores(row, ["speed"])
    again = methods.again_if_gone({"overrides": ["x=1"], **row}, tmp_path / "20-lhspg-auto", ["run", "ppl", "tasks"])
    assert again == {"overrides": ["x=1"], "earlier": row}
    assert methods.again_if_gone(row, tmp_path / "20-lhspg-auto", ["run", "ppl"]) is row  # nothing missing
    (tmp_path / "20-lhspg-auto" / "04-recover" / "model").mkdir(parents=True)
    assert methods.again_if_gone(row, tmp_path / "20-lhspg-auto", ["run", "ppl", "tasks"]) is row  # folders here
    dense_tasks = methods.dense_score("tasks", argparse.Namespace(limit=200, ppl_windows=128))
    assert dense_tasks["copied_from"] == "importance_smollm2.json" and dense_tasks["limit"] == 200


def test_methods_seed_sets_the_pruning_run_and_leaves_recovery_alone():
    """A seed other than the recipe's sets the calibration draw and the trained method's seed (data order, LoRA
    init) through recipe overrides; recovery keeps the recipe's seed. The recipe's seed is the unseeded row."""
    base = methods.row_recipe(0.2, "lhspg-auto")
    prune = base.prune("OUT")
    assert prune.seed == prune.calibration.seed == prune.options.seed == _common.DEFAULT_SEED
    assert base.recover("p", "o", resume=False).seed == _common.DEFAULT_SEED
    assert methods.row_overrides(0.2, "lhspg-auto", seed=_common.DEFAULT_SEED) == methods.row_overrides(0.2, "lhspg-auto")
    seeded = methods.row_recipe(0.2, "lhspg-auto", seed=2)
    prune = seeded.prune("OUT")
    assert prune.seed == prune.calibration.seed == prune.options.seed == 2
    assert seeded.recover("p", "o", resume=False).seed == _common.DEFAULT_SEED
    assert methods.row_recipe(0.2, "wanda-sp-auto-150k", seed=1).prune("OUT").calibration.seed == 1  # one-shot too
    argv = methods.row_argv(0.2, "lhspg-auto", Path("/w/x"), seed=1)
    assert "calibration.seed=1" in argv and "prune.seed=1" in argv
    assert not any("seed=" in a for a in methods.row_argv(0.2, "lhspg-auto", Path("/w/x")))


def test_methods_new_20_percent_leader_rows():
    """wanda-sp-auto-150k: one-shot Wanda-SP at LHSPG's total tokens; the m64 rows keep LHSPG's channels a multiple of 64."""
    recipe = methods.row_recipe(0.2, "wanda-sp-auto-150k")
    assert recipe.prune("OUT").method == "wanda-sp" and recipe.recover("p", "o", resume=False).tokens == 149152
    for name, saliency in (("lhspg-auto-m64", "taylor"), ("lhspg-wanda-sp-m64", "wanda-sp")):
        prune = methods.row_recipe(0.2, name).prune("OUT")  # the rows say prune.group_divisible, multiple_of's old name
        assert prune.multiple_of == 64 and prune.options.saliency == saliency


def test_methods_seeded_rows_have_their_own_key_and_folder():
    assert _common.method_row_key(0.2, "lhspg-auto") == _common.method_row_key(0.2, "lhspg-auto", 0) == "20% lhspg-auto"
    assert _common.method_row_key(0.2, "lhspg-auto", 1) == "20% lhspg-auto seed=1"
    assert _common.split_method_key("20% lhspg-auto seed=1") == ("20%", "lhspg-auto", 1)
    assert _common.split_method_key("50% lhspg-auto") == ("50%", "lhspg-auto", 0)
    work = Path("/w")
    assert methods.row_folder(work, "20% lhspg-auto") == work / "20-lhspg-auto"  # as before: existing folders stay valid
    assert methods.row_folder(work, "20% lhspg-auto seed=2") == work / "20-lhspg-auto-seed2"
    assert methods.parse_seeds("0,1,2,1") == [0, 1, 2]
    with pytest.raises(SystemExit, match="--seeds"):
        methods.parse_seeds("0,one")


def test_methods_seed_table_is_mean_and_sample_sd_over_seeds():
    """Rows run with several seeds get mean ± sample sd of wiki PPL and of the six-task average without boolq;
    a score not measured for every seed says over how many it is; single-seed rows and pending seeds are left out."""

    def tasks(six: float) -> dict:
        return {"avg": 0.0, "tasks": {**{t: six for t in AVERAGE_METRIC}, "boolq": 0.9}}

    def row(pruned: float, recovered: float, six_pruned: float | None, six_recovered: float) -> dict:
        return {"run": {"seconds": 1.0, "params": 8},
                "pruned": {"ppl": {"ppl": pruned}, **({"tasks": tasks(six_pruned)} if six_pruned else {})},
                "recovered": {"ppl": {"ppl": recovered}, "tasks": tasks(six_recovered)}}

    results = {"model": "m", "command": "c", "machine": "x", "limit": 200, "rows": {
        "dense": {"params": 10},
        "20% lhspg-auto": row(40.0, 36.0, 0.30, 0.40),
        "20% taylor-auto": row(50.0, 39.0, 0.30, 0.40),
        "20% lhspg-auto seed=1": row(42.0, 37.0, 0.32, 0.42),
        "20% lhspg-auto seed=2": row(44.0, 38.0, None, 0.44),
        "20% taylor-auto seed=1": {"overrides": []},  # pending: not a second seed yet
    }}
    text = render.methods_markdown(results)
    assert "| 20% | lhspg-auto | 0, 1, 2 | 3 | 42.00 ± 2.00 | 37.00 ± 1.00 | 31.00 ± 1.41 (n=2) | 42.00 ± 2.00 |" in text
    assert "| 20% | taylor-auto | 0" not in text
    assert "| 20% | lhspg-auto seed=1 | 8 | 42.00 | 37.00 |" in text
    line = next(line for line in text.splitlines() if line.startswith("| 20% | lhspg-auto seed=2 | 8 |"))
    assert line.endswith(f"| {_common.METHOD_ROWS['lhspg-auto'][0]} |")  # the row's description, as the unseeded row's
    del results["rows"]["20% lhspg-auto seed=1"], results["rows"]["20% lhspg-auto seed=2"]
    assert "| seeds | n |" not in render.methods_markdown(results)  # no row with several seeds: no seed table
    assert render.mean_sd([None, None]) == "" and render.mean_sd([0.5, None], 100) == "50.00 (n=1)"


def test_methods_runs_seed_by_seed_and_skips_rows_already_measured(tmp_path, monkeypatch):
    """`--seeds 0,1`: every row's recipe seed first, then the second seed; a row already measured (the unseeded
    key, seed 0) does not run again; each seed runs in its own folder with its seed's overrides."""
    measured = {"run": {"seconds": 1.0, "params": 8}, "pruned": {"ppl": {"ppl": 40.0}},
                "recovered": {"ppl": {"ppl": 36.0}}}
    (tmp_path / "t.json").write_text(json.dumps({"model": "m", "rows": {
        "dense": {"params": 10, "ppl": {"ppl": 20.0}}, "20% lhspg-auto": measured}}))
    monkeypatch.setattr(methods, "RESULTS", tmp_path)
    monkeypatch.setattr(methods, "write_results", lambda stem, data, md: (tmp_path / f"{stem}.json").write_text(
        json.dumps(data)))
    ran, scored = [], []
    monkeypatch.setattr(methods, "run_row", lambda ratio, name, out, seed: ran.append((name, seed, out.name)) or {
        "seconds": 2.0, "params": 8})
    monkeypatch.setattr(methods, "score", lambda folder, part, args: scored.append(folder) or {"ppl": 1.0})
    work = tmp_path / "work"
    monkeypatch.setattr(sys, "argv", ["methods.py", "--workdir", str(work), "--rows", "lhspg-auto-m64,lhspg-auto",
                                      "--seeds", "0,1", "--parts", "run,ppl", "--stem", "t"])
    assert methods.main() == 0
    assert ran == [("lhspg-auto-m64", 0, "20-lhspg-auto-m64"), ("lhspg-auto-m64", 1, "20-lhspg-auto-m64-seed1"),
                   ("lhspg-auto", 1, "20-lhspg-auto-seed1")]
    assert len(scored) == 2 * len(ran)  # pruned and recovered of each new row; none of the measured one
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert rows["20% lhspg-auto"] == measured
    assert rows["20% lhspg-auto seed=1"]["overrides"] == ["calibration.seed=1", "prune.seed=1"]
    assert rows["20% lhspg-auto-m64"]["overrides"] == _common.METHOD_ROWS["lhspg-auto-m64"][1]
    monkeypatch.setattr(sys, "argv", ["methods.py", "--workdir", str(work), "--rows", "torch-pruning", "--seeds", "0,1"])
    with pytest.raises(SystemExit):
        methods.main()


def test_dtype_quality_reports_each_dtype_against_float32():
    """benchmarks/dtype_quality.py: each dtype's wiki PPL relative to float32's, float32 the reference row."""
    results = {"model": "m", "ppl_windows": 4, "machine": "cpu", "command": "c",
               "rows": {"float32": {"ppl": 20.0, "seconds": 10.0}, "bfloat16": {"ppl": 20.1, "seconds": 70.0}}}
    assert render.relative_difference(results) == pytest.approx({"bfloat16": 0.005})
    text = render.dtype_quality_markdown(results)
    assert "| float32 | 20.000 | reference | 10 |" in text and "| bfloat16 | 20.100 | +0.500% | 70 |" in text
    path = BENCHMARKS / "results" / "dtype_quality.json"
    if path.is_file():  # the committed report is what the script renders from its JSON
        assert render.dtype_quality_markdown(json.loads(path.read_text())) == path.with_suffix(".md").read_text()


def test_gpu_smoke_stages_are_valid_commands_and_its_table_reads_its_rows(tmp_path):
    """benchmarks/gpu_smoke.py (run for real on a lent GPU, and on a CPU with --sizes small): every stage's
    command parses as the CLI's, its data is the repository's own text, and the table divides peak by params."""
    from lorashear.cli import build_parser

    parser = build_parser()
    for stage, argv in gpu_smoke.STAGES.items():
        args = parser.parse_args(argv(str(tmp_path), str(tmp_path / "small"), str(tmp_path / "model")))
        assert args.command == ("prune" if stage in ("taylor", "lhspg") else stage)
    gpu_smoke.write_data(tmp_path)
    records = json.loads((tmp_path / "instruct.json").read_text())
    assert len(records) > 10 and all(r["output"] for r in records)
    results = {"device": "cuda", "device_name": "GPU", "torch": "2", "command": "c", "params": {"8b": 8_000_000_000},
               "rows": {"8b taylor": {"exit": 0, "peak_bytes": 20_000_000_000, "seconds": 60.0},
                        "8b eval": {"exit": 1, "error": "x"}},
               "agreement": {"device": "cuda", "max_logit_difference": 1e-5, "max_taylor_relative_difference": 2e-6}}
    text = gpu_smoke.markdown(results)
    assert "| 8b | 8,000,000,000 | taylor | 20.00 | 2.50 | 60.0 | 0 |" in text and "| 8b | 8,000,000,000 | eval |" in text
    assert "logits differ by at most 1.00e-05" in text


def test_a_recorded_command_shows_the_machines_folders_as_workdir():
    """render.command_text: --workdir's value and the folders under /work/keep or /tmp read WORKDIR (their first part
    is the run's workdir), paths in a checkout of the repository are relative; other words stay."""
    assert render.command_text("python benchmarks/x.py --workdir /tmp/x --rounds 5") == \
        "python benchmarks/x.py --workdir WORKDIR --rounds 5"
    assert render.command_text("x.py --workdir=runs/bench") == "x.py --workdir=WORKDIR"
    assert render.command_text("recovery.py --pruned /work/keep/methods/20-lhspg-auto/03-prune/model --stem s") == \
        "recovery.py --pruned WORKDIR/20-lhspg-auto/03-prune/model --stem s"
    assert render.command_text("lorashear run /work/main/recipes/lorashear-20.yaml -o /work/bench-src") == \
        "lorashear run recipes/lorashear-20.yaml -o ."
    plain = "lorashear prune smollm2-135m --ratio 0.2 -o OUT --overwrite"
    assert render.command_text(plain) == plain
    results = {"model": "m", "command": "python benchmarks/importance.py --workdir /tmp/x", "machine": "x",
               "limit": 200, "rows": {}}
    assert "`python benchmarks/importance.py --workdir WORKDIR`" in render.importance_markdown(results)


def test_benchmarks_md_names_no_folder_of_the_machine_it_ran_on():
    """BENCHMARKS.md as committed shows no /work/... or /tmp/... folder (the recorded commands read WORKDIR)."""
    text = (BENCHMARKS.parent / "BENCHMARKS.md").read_text()
    assert "/work/" not in text and "/tmp/" not in text


SCRIPTS = sorted(path.stem for path in BENCHMARKS.glob("*.py"))
SHARED = ("_common", "render")  # the modules of benchmarks/ its files may import


def imported_modules(path: Path) -> set[str]:
    """The top-level names a file imports: `import a.b`, `from a import b`, `importlib.import_module("a")`."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in
              ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
            names.add(str(node.args[0].value).split(".")[0])
    return names


def test_no_benchmark_script_imports_another():
    """A file of benchmarks/ imports only _common and render from it; _common none, render _common alone; and every
    script imports by that one way (benchmarks/ on sys.path: a script's own run, pyproject's pytest `pythonpath`)."""
    scripts = set(SCRIPTS) - set(SHARED)
    for name in SCRIPTS:
        assert not imported_modules(BENCHMARKS / f"{name}.py") & scripts, f"benchmarks/{name}.py imports a script"
    assert not imported_modules(BENCHMARKS / "_common.py") & set(SCRIPTS)
    assert imported_modules(BENCHMARKS / "render.py") & set(SCRIPTS) == {"_common"}
    assert not hasattr(_common, "main")  # a module, not a script
    for name in SCRIPTS:
        importlib.import_module(name)


def test_no_test_file_touches_sys_path():
    """Tests reach benchmarks/ through pyproject's pytest `pythonpath`, never by changing sys.path themselves."""
    tests = Path(__file__).resolve().parent
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            sys_path = isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys"
            prepend = isinstance(node, ast.Attribute) and node.attr == "syspath_prepend"
            assert not (sys_path or prepend), f"tests/{path.relative_to(tests)}:{node.lineno} touches sys.path"
