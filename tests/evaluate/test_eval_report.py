import json

from lorashear.evaluate.perplexity import PerplexityResult
from lorashear.evaluate.report import EvalResult, write_json
from lorashear.evaluate.zeroshot import TaskScore


def test_json_schema_and_markdown(tmp_path):
    result = EvalResult(
        model="m",
        params=123,
        ppl={"wiki": PerplexityResult("wiki", 21.5, 128, 512, 128 * 511)},
        tasks={"boolq": TaskScore(0.6, 0.3, 200), "hellaswag": TaskScore(0.3, 0.4, 200)},
        settings={"limit": 200},
    )
    data = json.loads(write_json(result, tmp_path / "r.json").read_text())
    assert data["ppl"] == {"wiki": 21.5}
    assert data["tasks"]["boolq"] == {"acc": 0.6, "acc_norm": 0.3, "n": 200, "acc_stderr": None,
                                      "acc_norm_stderr": None}
    assert data["avg"] == (0.6 + 0.4) / 2
    assert data["avg_metric"] == {"boolq": "acc", "hellaswag": "acc_norm"}
    assert data["speed"] is None
    assert data["settings"]["ppl"]["wiki"] == {"corpus": "wiki", "windows": 128, "seq_len": 512,
                                               "predicted_tokens": 128 * 511}
    table = result.to_markdown()
    assert "| wiki | 21.500 | 128 × 512 |" in table
    assert "| boolq | 60.00 | 30.00 | 200 | acc |" in table
    assert "**50.00**" in table
