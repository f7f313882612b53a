"""`lorashear run`: the demo recipe's stages end to end on a tiny model, resume, overrides, bad recipes, report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from accelerate_state import fresh_accelerate_state  # noqa: F401
from tiny_models import single_thread  # noqa: F401

from lorashear.cli import main
from lorashear.errors import LorashearError
from lorashear.pipeline import load_recipe, recipe_from_dict, run_recipe, runner
from lorashear.pipeline.recipe import apply_overrides

DEMO = Path(__file__).parents[2] / "recipes" / "demo.yaml"


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> dict[str, str]:
    """A small text file and an Alpaca-format file for the recovery stage."""
    from lorashear.data import load_documents

    root = tmp_path_factory.mktemp("pipeline-data")
    docs = load_documents("tiny-stories")[:60]
    (root / "stories.txt").write_text("\n\n".join(docs))
    records = [{"instruction": "Continue the story.", "input": "", "output": d[:300]} for d in docs]
    (root / "instruct.json").write_text(json.dumps(records))
    return {"text": str(root / "stories.txt"), "instruct": str(root / "instruct.json")}


# The demo's prune stage is LHSPG; these replace it by a one-shot method (the whole section).
ONE_SHOT = "prune={method: taylor, ratio: 0.2, kinds: [kv_group, mlp_channel]}"


def tiny(model: Path, texts: dict[str, str], *extra: str) -> list[str]:
    """Overrides that shrink the demo recipe to a tiny model and budget (seconds)."""
    return [f"model={model}", "calibration.data=[tiny-stories, c4]", "calibration.samples=8",
            "prune.tokens=256", "prune.seq_len=32", "prune.warmup_share=0.25", "prune.periods=2",
            "prune.multiple_of=1",  # the demo's 64-channel steps are most of a tiny model's MLP
            "prune.data=[tiny-stories, c4]",
            "calibration.seq_len=32", "calibration.held_out=4", "analyze.kinds=[kv_group, mlp_channel]",
            "recover.tokens=256", "recover.seq_len=32", "recover.batch_size=2", "recover.mix_interval=2",
            "recover.eval_sequences=2", "recover.checkpoint_every=1",
            f"recover.data=[{texts['text']}]", f"recover.instruct=[{texts['instruct']}]",
            "evaluate.ppl_windows=1", "evaluate.tasks=[piqa]", "evaluate.limit=2", "evaluate.speed=false", *extra]


def card_header(folder: Path) -> dict:
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_demo_recipe_end_to_end_then_resume_skips_and_report_regenerates(small_vocab_dirs, texts, tmp_path):
    out = tmp_path / "run"
    recipe = load_recipe(DEMO, tiny(small_vocab_dirs["llama"], texts))
    result = run_recipe(recipe, out, log=lambda _: None)
    assert result.finished and result.ran == ["analyze", "knowledge", "prune", "recover", "evaluate"]
    for i, name in enumerate(result.ran, 1):
        folder = out / f"{i:02d}-{name}"
        assert (folder / "DONE").is_file() and (folder / "config.yaml").is_file(), folder
        assert not (out / f".{folder.name}.partial").exists()
    # The prune stage used the knowledge stage's verdict (not a second probe).
    analysis = json.loads((out / "02-knowledge" / "knowledge.json").read_text())
    pruning = json.loads((out / "03-prune" / "model" / "pruning.json").read_text())
    assert pruning["knowledge"]["unprunable"] == analysis["unprunable"] and pruning["method"] == "lhspg"
    assert abs(pruning["achieved_ratio"] - 0.2) < 0.01
    assert yaml.safe_load((out / "03-prune" / "config.yaml").read_text())["ratio"] == 0.2

    report = (out / "report.md").read_text()
    assert "| | dense | pruned | recovered |" in report and "| parameters |" in report
    assert "| zero-shot average |" in report and "PPL wiki" in report
    assert "02-knowledge/knowledge.png" in report and "figures/recovery/loss.png" in report
    assert "03-prune/model/lhspg/curves.png" in report  # LHSPG's loss and sparsity per step
    assert "## How this was made" in report and "torch " in report  # commands, versions, hardware
    assert json.loads((out / "run.json").read_text())["resumed"] == [] and "resumed" not in report
    for picture in ("summary.png", "layers.png", "recovery/loss.png"):
        assert (out / "figures" / picture).stat().st_size > 0
    assert any((out / "figures" / "recovery").glob("mixture_*.png"))
    page = (out / "report.html").read_text()  # the same report as one page: tables and the figures beside it
    assert page.startswith("<!doctype html>") and "<table>" in page and ">dense</th>" in page
    assert '<img src="figures/layers.png"' in page and '<img src="02-knowledge/knowledge.png"' in page

    for folder, recovered in ((out / "03-prune" / "model", False), (out / "04-recover" / "model", True)):
        meta = card_header(folder)
        assert meta["base_model"] == str(small_vocab_dirs["llama"]) and meta["method"] == "lhspg"
        assert meta["ratio"] == 0.2 and meta["recovered"] is recovered and "lorashear" in meta["tags"]
        metrics = meta["model-index"][0]["results"][0]["metrics"]
        assert {m["type"] for m in metrics} >= {"perplexity", "acc_norm"}

    # A rerun with --resume skips every finished stage; `lorashear report` rebuilds the report from files.
    again = run_recipe(recipe, out, resume=True, log=lambda _: None)
    assert again.ran == [] and len(again.skipped) == 5
    report = (out / "report.md").read_text()
    assert report.count("- 20") == 2  # both invocations are listed with their command
    (out / "report.md").unlink()
    (out / "figures" / "layers.png").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").read_text() == report and (out / "figures" / "layers.png").is_file()


def test_interrupted_stage_leaves_nothing_done_and_resume_continues(small_vocab_dirs, texts, tmp_path, monkeypatch):
    out = tmp_path / "run"
    recipe = load_recipe(DEMO, tiny(small_vocab_dirs["llama"], texts, "recover=null", "evaluate=null",
                                    "analyze=null", ONE_SHOT))  # a one-shot stage redoes its interrupted run
    real = {s.name: s for s in runner.STAGES}

    def interrupted(ctx):
        (ctx.work / "half-written").write_text("x")
        raise KeyboardInterrupt

    stages = tuple(s if s.name != "prune" else runner.Stage("prune", interrupted, s.enabled) for s in runner.STAGES)
    monkeypatch.setattr(runner, "STAGES", stages)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, out, log=lambda _: None)
    assert (out / "02-knowledge" / "DONE").is_file()
    assert not (out / "03-prune").exists() and (out / ".03-prune.partial").is_dir()
    assert not (out / "report.md").exists()

    monkeypatch.setattr(runner, "STAGES", tuple(real.values()))
    with pytest.raises(LorashearError, match="pass --resume"):
        run_recipe(recipe, out, log=lambda _: None)
    result = run_recipe(recipe, out, resume=True, log=lambda _: None)
    assert result.skipped == ["knowledge"] and result.ran == ["prune"]
    assert not (out / ".03-prune.partial").exists() and not (out / "03-prune" / "half-written").exists()
    assert (out / "03-prune" / "DONE").is_file() and (out / "report.md").is_file()


def test_knowledge_from_takes_an_earlier_runs_verdict(small_vocab_dirs, texts, tmp_path):
    """`knowledge.from`: the knowledge stage takes that file's verdict (nothing probed), the prune stage uses it,
    pruning.json names the file; `from` beside rule keys is one clear error."""
    base = tiny(small_vocab_dirs["llama"], texts, "recover=null", "evaluate=null", "analyze=null", ONE_SHOT)
    first = tmp_path / "first"
    run_recipe(load_recipe(DEMO, [*base, "knowledge.rule=fixed"]), first, log=lambda _: None)
    source = first / "02-knowledge" / "knowledge.json"
    second = tmp_path / "second"
    run_recipe(load_recipe(DEMO, [*base, f"knowledge={{from: {source}}}"]), second, log=lambda _: None)
    verdict = json.loads(source.read_text())["unprunable"]
    assert verdict and json.loads((second / "02-knowledge" / "knowledge.json").read_text())["unprunable"] == verdict
    pruning = json.loads((second / "03-prune" / "model" / "pruning.json").read_text())
    assert pruning["knowledge"]["unprunable"] == verdict and pruning["knowledge"]["from"] == str(source)
    assert yaml.safe_load((second / "02-knowledge" / "config.yaml").read_text())["from"] == str(source)
    with pytest.raises(LorashearError, match="either 'from' or the rule keys"):
        load_recipe(DEMO, [*base, f"knowledge={{from: {source}, rule: auto}}"])


def test_recovery_stopped_early_resumes_from_its_checkpoint(small_vocab_dirs, texts, tmp_path):
    out = tmp_path / "run"
    base = tiny(small_vocab_dirs["llama"], texts, "evaluate=null", "analyze=null", "knowledge=null")
    first = run_recipe(load_recipe(DEMO, [*base, "recover.stop_after_steps=1"]), out, log=lambda _: None)
    assert not first.finished and first.ran == ["prune"]
    assert not (out / "04-recover").exists() and any((out / ".04-recover.partial").rglob("step-00000001"))
    # stop_after_steps may change on resume (as for `lorashear recover --resume`); the rest may not.
    with pytest.raises(LorashearError, match="different recipe.*recover"):
        run_recipe(load_recipe(DEMO, [*base, "recover.lr=0.5"]), out, resume=True, log=lambda _: None)
    logs = []
    second = run_recipe(load_recipe(DEMO, base), out, resume=True, log=logs.append)
    assert second.finished and second.ran == ["recover"] and any("resuming from" in line for line in logs)
    assert (out / "04-recover" / "DONE").is_file() and (out / "04-recover" / "model" / "config.json").is_file()
    # Its seconds are the resumed attempt's only, and run.json, the DONE marker and the report say so.
    assert json.loads((out / "run.json").read_text())["resumed"] == ["recover"]
    assert json.loads((out / "04-recover" / "DONE").read_text())["resumed"] is True
    assert json.loads((out / "03-prune" / "DONE").read_text())["resumed"] is False
    assert "* resumed: its last attempt only" in (out / "report.md").read_text()


def test_a_bfloat16_run_keeps_every_stage_in_bfloat16(small_vocab_dirs, texts, tmp_path):
    """`dtype=bfloat16`: pruned and recovered folders are saved in bf16, run.json and the report say so."""
    out = tmp_path / "run"
    recipe = load_recipe(DEMO, tiny(small_vocab_dirs["llama"], texts, ONE_SHOT, "knowledge=null", "dtype=bfloat16",
                                    "evaluate.tasks=[]"))
    assert recipe.prune("x").dtype == "bfloat16" and recipe.recover("p", "o", False).dtype == "bfloat16"
    assert run_recipe(recipe, out, log=lambda _: None).finished
    assert json.loads((out / "run.json").read_text())["dtype"] == "bfloat16"
    for stage in ("03-prune", "04-recover"):
        assert json.loads((out / stage / "model" / "config.json").read_text())["dtype"] == "bfloat16", stage
    assert json.loads((out / "04-recover" / "model" / "recovery.json").read_text())["dtype"] == "bfloat16"
    assert "weights in bfloat16" in (out / "report.md").read_text()


def test_overrides_set_nested_keys_and_switch_sections(tmp_path):
    sections = {"model": "m", "prune": {"ratio": 0.2}, "recover": None}
    got = apply_overrides(sections, ["prune.ratio=0.5", "recover.tokens=1000", "evaluate.tasks=[piqa, boolq]",
                                     "knowledge=null"])
    assert got == {"model": "m", "prune": {"ratio": 0.5}, "recover": {"tokens": 1000},
                   "evaluate": {"tasks": ["piqa", "boolq"]}, "knowledge": None}
    assert sections["prune"]["ratio"] == 0.2  # the input is left alone
    recipe = load_recipe(DEMO, ["prune.ratio=0.35", "recover=null"])
    assert recipe.prune("x").ratio == 0.35 and not recipe.enabled("recover")
    assert recipe.prune("x").knowledge.criterion == "wanda-sp"  # LHSPG's probe (its saliency needs training)


def test_numbers_in_exponent_form_are_numbers_in_overrides_and_recipe_files(tmp_path):
    """`prune.lr=2e-4` was the string '2e-4' (YAML 1.1 floats need a dot) and crashed the run's validation."""
    got = apply_overrides({"model": "m", "prune": {}}, ["prune.lr=2e-4", "recover.lr=1E-3", "prune.tokens=5e4"])
    assert got["prune"] == {"lr": 2e-4, "tokens": 5e4} and got["recover"] == {"lr": 1e-3}
    assert apply_overrides({}, ["model=1e-3x", "prune.name=e5"]) == {"model": "1e-3x", "prune": {"name": "e5"}}
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: smollm2-135m\nprune: {method: lhspg, ratio: 0.2, lr: 5e-4}\n")
    assert load_recipe(recipe).prune("x").options.lr == 5e-4


@pytest.mark.parametrize("raw, overrides, match", [
    ({"prune": {"ratio": 0.2}, "evalute": {}}, [], r"unknown key\(s\) in 'recipe': evalute; known: analyze, "),
    ({"prune": {"ratio": 0.2}}, ["prune.method=taylor", "prune.periods=3"],
     r"unknown key\(s\) in 'prune': periods; known: .*ratio.*; method 'taylor': score_options$"),
    ({"prune": {"ratio": 0.2}}, ["recover.tokenz=5"], r"unknown key\(s\) in 'recover': tokenz; known: .*tokens"),
    ({"prune": {"ratio": 0.2}}, ["evaluate.ppl=wiki"], r"unknown key\(s\) in 'evaluate': ppl; known: .*ppl_corpora"),
    ({"prune": {"ratio": 0.2}, "knowledge": {"rules": "auto"}}, [], r"in 'knowledge': rules; known: .*rule"),
    ({"prune": {"ratio": 1.5}}, [], "ratio must be in"),
    ({"prune": {"ratio": 0.2}}, ["prune.ratio"], "an override is KEY.SUB=VALUE"),
    ({"prune": {"ratio": 0.2}}, ["recipe.model=x"], "unknown section 'recipe'"),
    ({"prune": {"ratio": 0.2}}, ["recover.tokens=0"], "--tokens must be a positive"),
    ({}, [], "needs a `prune:` section"),
    ({"prune": {"ratio": 0.2}}, ["dtype=bf16"], "unknown dtype 'bf16'; choose from auto, float32, bfloat16"),
    ({"prune": {"ratio": 0.2}}, ["prune.dtype=bfloat16"], r"unknown key\(s\) in 'prune': dtype"),
])
def test_bad_recipe_is_one_clear_error(raw, overrides, match):
    with pytest.raises(LorashearError, match=match):
        recipe_from_dict({"model": "smollm2-135m", **raw}, overrides)


def test_cli_dtype_flag_is_the_dtype_override_and_a_bad_one_is_refused(tmp_path, capsys, monkeypatch):
    import lorashear.cli.run_cmd

    seen = []
    monkeypatch.setattr(lorashear.cli.run_cmd, "run_recipe", lambda recipe, *a, **k: seen.append(recipe.dtype) or
                        runner.RunResult(tmp_path, True, [], []))
    assert main(["run", str(DEMO), "-o", str(tmp_path / "out"), "--dtype", "bfloat16"]) == 0
    # overrides after the options, as the usage line writes them (argparse alone refused them: a run never started)
    assert main(["run", str(DEMO), "-o", str(tmp_path / "out"), "--resume", "dtype=bfloat16"]) == 0
    assert seen == ["bfloat16", "bfloat16"]
    with pytest.raises(SystemExit):
        main(["run", str(DEMO), "-o", str(tmp_path / "out"), "--resume", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(DEMO), "-o", str(tmp_path / "out"), "--dtype", "bf16"])
    assert exit_info.value.code == 2 and "invalid choice: 'bf16'" in capsys.readouterr().err


def test_cli_bad_key_exits_2_with_one_line_and_no_output(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model: smollm2-135m\nprune: {ratio: 0.2, ratoi: 0.3}\n")
    out = tmp_path / "out"
    assert main(["run", str(recipe), "-o", str(out)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lorashear run: error:")]
    assert len(errors) == 1 and re.search("ratoi", errors[0]) and "known:" in errors[0], errors
    assert not out.exists()
    assert main(["report", str(tmp_path)]) == 2  # not a run folder


def test_trained_prune_stage_stopped_early_resumes_from_its_checkpoint(small_vocab_dirs, texts, tmp_path):
    """A trained method (lhspg) stopped by stop_after_steps leaves the prune stage unfinished; --resume
    continues its run from the checkpoint instead of failing or starting over."""
    out = tmp_path / "run"
    base = tiny(small_vocab_dirs["llama"], texts, "evaluate=null", "analyze=null", "knowledge=null", "recover=null",
                "prune.checkpoint_every=1")
    first = run_recipe(load_recipe(DEMO, [*base, "prune.stop_after_steps=1"]), out, log=lambda _: None)
    assert not first.finished and first.ran == [] and not (out / "03-prune").exists()
    logs = []
    second = run_recipe(load_recipe(DEMO, base), out, resume=True, log=logs.append)
    assert second.finished and second.ran == ["prune"] and any("resuming from" in line for line in logs)
    record = json.loads((out / "03-prune" / "model" / "pruning.json").read_text())
    assert record["method"] == "lhspg" and abs(record["achieved_ratio"] - 0.2) < 0.01
