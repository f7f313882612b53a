import json

from lorashear.evaluate.perplexity import PerplexityResult
from lorashear.evaluate.report import EvalResult, write_json
from lorashear.evaluate.zeroshot import TaskScore


def test_json_schema_and_markdown(tmp_path):
    result = EvalResult(
        model="m",
        params=123,
        ppl={"wiki": PerplexityResult("wiki", 21.5, 128, 512, 128 * 511, "<|im_start|>"),
             "c4": PerplexityResult("c4", 30.25, 16, 256, 16 * 255)},
        tasks={"boolq": TaskScore(0.6, 0.3, 200), "hellaswag": TaskScore(0.3, 0.4, 200)},
        settings={"limit": 200},
    )
    data = json.loads(write_json(result, tmp_path / "r.json").read_text())
    assert data["ppl"] == {"wiki": 21.5, "c4": 30.25}
    assert data["tasks"]["boolq"] == {"acc": 0.6, "acc_norm": 0.3, "n": 200, "acc_stderr": None,
                                      "acc_norm_stderr": None}
    assert data["avg"] == (0.6 + 0.4) / 2
    assert data["avg_metric"] == {"boolq": "acc", "hellaswag": "acc_norm"}
    assert data["speed"] is None
    assert data["settings"]["ppl"]["wiki"] == {"corpus": "wiki", "windows": 128, "seq_len": 512,
                                               "predicted_tokens": 128 * 511, "bos": "<|im_start|>"}
    table = result.to_markdown()
    assert "| wiki | 21.500 | 128 × 512 (BOS <\\|im_start\\|> + 511 text tokens) |" in table  # pipes escaped
    assert "| c4 | 30.250 | 16 × 256 (text tokens, no BOS) |" in table
    assert "| boolq | 60.00 | 30.00 | 200 | acc |" in table
    assert "**50.00**" in table


def test_from_dict_inverts_to_dict(tmp_path):
    from lorashear.evaluate.speed import Machine, SpeedResult

    machine = Machine("cpu", "some cpu", 2, 1, (1.5, 2.5))  # with where and under what load it was timed
    speed = SpeedResult("cpu", 400.0, 16.0, 10, "cpu_peak_rss_increase", 5, 4, 6, 512, 512, 128, 32, 3, machine,
                        ("busy machine",))
    result = EvalResult(model="m", params=5, ppl={"wiki": PerplexityResult("wiki", 2.5, 2, 8, 14, "<s>")},
                        tasks={"piqa": TaskScore(0.5, 0.6, 10, 0.1, 0.1)}, speed=speed, settings={"limit": 10})
    again = EvalResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result
    old = result.to_dict()  # files written before the BOS convention have no `bos`: their windows had none
    del old["settings"]["ppl"]["wiki"]["bos"]
    assert EvalResult.from_dict(old).ppl["wiki"].bos is None
