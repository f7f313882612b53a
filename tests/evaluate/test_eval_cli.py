import functools
import json

import pytest

from lorashear.cli import main


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tiny_model, tokenizer):
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_eval_writes_one_json_object_and_a_table(tiny_folder, tmp_path, capsys):
    out = tmp_path / "res" / "eval.json"
    rc = main(["eval", tiny_folder, "--tasks", "boolq,piqa", "--limit", "3", "--ppl-windows", "2",
               "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert {"model", "params", "ppl", "tasks", "avg", "speed", "settings"} <= set(data)
    assert data["speed"] is None  # only with --speed (its figures are tested in test_speed.py)
    assert data["model"] == tiny_folder
    assert set(data["ppl"]) == {"wiki"} and data["ppl"]["wiki"] > 1
    assert set(data["tasks"]) == {"boolq", "piqa"}
    for score in data["tasks"].values():
        assert {"acc", "acc_norm", "n"} <= set(score) and score["n"] == 3
    assert data["avg"] == pytest.approx((data["tasks"]["boolq"]["acc"] + data["tasks"]["piqa"]["acc_norm"]) / 2)
    assert data["settings"]["limit"] == 3 and data["settings"]["ppl"]["wiki"]["windows"] == 2
    assert [p.name for p in out.parent.iterdir()] == ["eval.json"]  # no temporary file left
    stdout = capsys.readouterr().out
    assert "| wiki |" in stdout and "| boolq |" in stdout and "avg = mean of boolq:acc" in stdout


def test_no_ppl_and_no_tasks(tiny_folder, tmp_path):
    out = tmp_path / "e.json"
    assert main(["eval", tiny_folder, "--no-ppl", "--tasks", "none", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["ppl"] == {} and data["tasks"] == {} and data["avg"] is None and data["speed"] is None


@pytest.mark.parametrize(
    "argv,message",
    [
        (["no-such-model"], "unknown model 'no-such-model'"),
        (["/nonexistent/model.gguf"], "GGUF file not found"),
        (["{folder}", "--tasks", "boolq,mmlu"], "valid tasks: boolq"),
        (["{folder}", "--limit", "0"], "limit must be a positive"),
        (["{folder}", "--ppl-windows", "0"], "perplexity windows must be a positive"),
        (["{folder}", "--batch-size", "0"], "batch size must be a positive"),
        (["{folder}", "--ppl", "no-such-corpus", "--tasks", "none"], "unknown corpus 'no-such-corpus'"),
    ],
)
def test_bad_input_exits_non_zero_with_one_error_line(tiny_folder, capsys, argv, message):
    argv = [a.replace("{folder}", tiny_folder) for a in argv]
    assert main(["eval", *argv]) != 0
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lorashear eval: error")]
    assert len(err_lines) == 1 and message in err_lines[0]


def test_several_models_are_evaluated_and_timed_side_by_side(tiny_folder, make_tiny_llama, tokenizer, tmp_path,
                                                              capsys, monkeypatch):
    import lorashear.evaluate.speed

    smaller = tmp_path / "smaller"
    make_tiny_llama(intermediate_size=64).save_pretrained(smaller)
    tokenizer.save_pretrained(smaller)
    short = functools.partial(lorashear.evaluate.speed.compare, rounds=2, prefill_tokens=16, decode_tokens=2,
                              decode_prompt_tokens=4)  # the tiny models' figures, not their size, are tested
    monkeypatch.setattr(lorashear.evaluate.speed, "compare", short)  # what compare_models calls when both fit
    out = tmp_path / "eval.json"
    assert main(["eval", tiny_folder, str(smaller), "--no-ppl", "--tasks", "none", "--speed", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [m["model"] for m in data["models"]] == [tiny_folder, str(smaller)]
    assert all(m["speed"] is None for m in data["models"])  # speed is only the side-by-side comparison
    assert data["speed"]["reference"] == tiny_folder and len(data["speed"]["models"][1]["rounds"]["prefill"]) == 2
    ratio = data["speed"]["models"][1]["ratio"]["decode"]
    stdout = capsys.readouterr().out
    assert f"| {ratio['median']:.2f}× ({ratio['min']:.2f}–{ratio['max']:.2f}) |" in stdout and "Machine: cpu" in stdout
    assert main(["eval", tiny_folder, tiny_folder, "--tasks", "none"]) == 2
    assert "named twice" in capsys.readouterr().err


def test_plan_estimate_and_stages_are_printed_first(tiny_folder, tmp_path, capsys, monkeypatch):
    import lorashear.evaluate as evaluate

    monkeypatch.setattr(evaluate, "LONG_RUN_SECONDS", 0.0)  # any run is "long": the note must show
    assert main(["eval", tiny_folder, "--tasks", "piqa", "--limit", "2", "--ppl-windows", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    plan = next(i for i, line in enumerate(out) if line.startswith("plan: 2 stages"))
    assert "tokens/s on cpu: about" in out[plan]
    assert out[plan + 1].startswith("note: the zero-shot tasks score the first 2 documents of each task")
    assert "--limit N" in out[plan + 1] and "--tasks none" in out[plan + 1]
    first = next(i for i, line in enumerate(out) if line.startswith("[1/2] ppl wiki: 1 windows × 512 tokens (about"))
    second = next(i for i, line in enumerate(out) if line.startswith("[2/2] piqa: 2 documents, 4 requests (about"))
    assert plan < first < second
    assert any(line.startswith("ppl wiki: ") for line in out[first:second])


def test_each_stage_is_saved_as_soon_as_it_is_measured(tiny_folder, tmp_path, monkeypatch, capsys):
    """A run stopped during the speed test keeps its perplexity and task scores; pending names the rest."""
    import lorashear.evaluate as evaluate

    def stopped(model):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "measure_speed", stopped)
    out = tmp_path / "partial.json"
    argv = ["eval", tiny_folder, "--tasks", "boolq,piqa", "--limit", "2", "--ppl-windows", "1", "--speed"]
    assert main([*argv, "--json", str(out)]) == 130
    data = json.loads(out.read_text())
    assert set(data["ppl"]) == {"wiki"} and set(data["tasks"]) == {"boolq", "piqa"} and data["speed"] is None
    assert data["settings"]["pending"] == ["speed"]
    assert "interrupted" in capsys.readouterr().err


@pytest.mark.parametrize("limit,expected", [([], 200), (["--limit", "all"], None), (["--limit", "7"], 7)])
def test_default_limit_on_cpu_is_200_documents(tiny_folder, tmp_path, limit, expected):
    out = tmp_path / "e.json"
    assert main(["eval", tiny_folder, "--no-ppl", "--tasks", "none", *limit, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["settings"]["limit"] == expected and data["settings"]["pending"] == []


def test_help_states_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "200 on a CPU" in text and "all on a GPU" in text and "after every stage" in text
