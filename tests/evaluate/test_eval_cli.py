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
    import lorashear.evaluate

    smaller = tmp_path / "smaller"
    make_tiny_llama(intermediate_size=64).save_pretrained(smaller)
    tokenizer.save_pretrained(smaller)
    short = functools.partial(lorashear.evaluate.compare, rounds=2, prefill_tokens=16, decode_tokens=2,
                              decode_prompt_tokens=4)  # the tiny models' figures, not their size, are tested
    monkeypatch.setattr(lorashear.evaluate, "compare", short)
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
