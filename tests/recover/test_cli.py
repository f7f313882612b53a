import json

import pytest

from lorashear.cli import main
from lorashear.recover.checkpoint import partial_dir


def _run(capsys, *argv) -> tuple[int, str]:
    code = main(["recover", *argv])
    return code, capsys.readouterr().err


@pytest.fixture
def base(material, tmp_path):
    def args(out="out", **flags):
        argv = [material["pruned"], "-o", str(tmp_path / out), "--dense", material["dense"], "--seq-len", "32",
                "--batch-size", "2", "--grad-accum", "1", "--tokens", "256", "--data", *material["data"],
                "--instruct", *material["instruct"]]
        for flag, value in flags.items():
            argv += [f"--{flag.replace('_', '-')}", *([value] if isinstance(value, str) else value)]
        return argv

    return args


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"tokens": "0"}, "--tokens must be a positive"),
        ({"tokens": "-5"}, "--tokens must be a positive"),
        ({"data": ["wiki"]}, "evaluation-only"),
        ({"data": ["boolq"]}, "evaluation-only"),
        ({"instruct": ["wiki"]}, "evaluation-only"),
        ({"stage_split": "1.5"}, "--stage-split"),
        ({"kd_weight": "2"}, "--kd-weight"),
    ],
)
def test_bad_options_fail_with_one_clear_error(capsys, base, tmp_path, flags, message):
    code, err = _run(capsys, *base(**flags))
    assert code == 2 and message in err and err.count("error:") == 1
    assert not (tmp_path / "out").exists() and not partial_dir(tmp_path / "out").exists()


def test_a_folder_that_is_not_a_model(capsys, base, tmp_path):
    (tmp_path / "empty").mkdir()
    argv = base()
    argv[0] = str(tmp_path / "empty")
    code, err = _run(capsys, *argv)
    assert code == 2 and "not a Hugging Face model" in err


def test_empty_and_too_small_data(capsys, base, tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    code, err = _run(capsys, *base(data=[str(tmp_path / "empty.txt")]))
    assert code == 2 and "is empty" in err
    (tmp_path / "small.txt").write_text("cat dog\n\nfish")
    code, err = _run(capsys, *base(data=[str(tmp_path / "small.txt")]))
    assert code == 2 and "too little" in err
    (tmp_path / "plain.json").write_text(json.dumps([{"text": "not an instruction"}] * 4))
    code, err = _run(capsys, *base(instruct=[str(tmp_path / "plain.json")]))
    assert code == 2 and "instruction" in err


def test_dense_is_required_for_the_dynamic_mix(capsys, base):
    argv = base()
    i = argv.index("--dense")
    del argv[i : i + 2]
    code, err = _run(capsys, *argv)
    assert code == 2 and "--dense" in err


def test_existing_output_and_resume_without_checkpoint(capsys, base, tmp_path):
    (tmp_path / "taken").mkdir()
    code, err = _run(capsys, *base(out="taken"))
    assert code == 2 and "already exists" in err
    code, err = _run(capsys, *base(out="fresh"), "--resume")
    assert code == 2 and "no checkpoint" in err


def test_cli_run_with_a_yaml_recipe(capsys, material, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("seq_len: 32\nbatch_size: 2\ngrad_accum: 1\nmix: uniform\nstage_split: 1.0\ntokens: 9999\n")
    out = tmp_path / "out"
    code = main(["recover", material["pruned"], "-o", str(out), "--config", str(recipe), "--tokens", "128",
                 "--data", ",".join(material["data"][:2])])
    assert code == 0, capsys.readouterr().err
    saved = (out / "recover_config.yaml").read_text()
    assert "tokens: 128" in saved and "mix: uniform" in saved and "seq_len: 32" in saved
    steps = (out / "logs" / "steps.jsonl").read_text().splitlines()
    assert len(steps) == 2 and all('"pretrain"' in s for s in steps)


def test_unknown_option_in_recipe(capsys, material, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("sequence_length: 32\n")
    code = main(["recover", material["pruned"], "-o", str(tmp_path / "o"), "--config", str(recipe), "--tokens", "1"])
    assert code == 2 and "sequence_length" in capsys.readouterr().err
