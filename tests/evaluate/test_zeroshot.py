import datasets
import pytest
from lm_eval.api.model import LM

from lorashear.data import ZERO_SHOT_TASKS
from lorashear.errors import LorashearError
from lorashear.evaluate.tasks import TASK_SOURCES, saved_dataset_file
from lorashear.evaluate.zeroshot import (
    AVERAGE_METRIC,
    TaskScore,
    average,
    average_rule_text,
    run_zero_shot,
    score_tasks,
)


class AlwaysPrefers(LM):
    """A scorer that gives one continuation log-likelihood 0 and every other -5."""

    def __init__(self, preferred: str) -> None:
        super().__init__()
        self.preferred = preferred
        self.requests: list[tuple[str, str]] = []

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        self.requests += [r.args for r in requests]
        return [(0.0 if cont.strip() == self.preferred else -5.0, False) for _, cont in (r.args for r in requests)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError

    def generate_until(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError


@pytest.mark.parametrize("preferred", ["yes", "no"])
def test_boolq_scored_through_lm_eval_counts_true_answers_as_yes(preferred):
    n = 40
    lm = AlwaysPrefers(preferred)
    score = score_tasks(lm, ["boolq"], limit=n)["boolq"]
    answers = datasets.Dataset.from_file(str(saved_dataset_file(TASK_SOURCES["boolq"].saved_dataset)))["answer"][:n]
    share_true = sum(answers) / n
    assert 0 < share_true < 1
    assert score.n == n
    assert score.acc == pytest.approx(share_true if preferred == "yes" else 1 - share_true)
    # lm-eval puts a space before the choice: the model is asked for " yes" / " no".
    assert {cont for _, cont in lm.requests} == {" yes", " no"}


def test_limit_5_runs_every_task_end_to_end(tiny_model, tokenizer):
    scores = run_zero_shot(tiny_model, tokenizer, ZERO_SHOT_TASKS, limit=5, batch_size=8)
    assert list(scores) == list(ZERO_SHOT_TASKS)
    for score in scores.values():
        assert score.n == 5
        assert 0.0 <= score.acc <= 1.0 and 0.0 <= score.acc_norm <= 1.0
        # five docs: every accuracy is a multiple of 1/5
        assert round(score.acc * 5) == pytest.approx(score.acc * 5)


@pytest.mark.parametrize("limit", [0, -1])
def test_non_positive_limit_is_refused(tiny_model, tokenizer, limit):
    with pytest.raises(LorashearError, match="limit must be a positive"):
        run_zero_shot(tiny_model, tokenizer, ["boolq"], limit=limit)


def test_unknown_task_is_refused_before_any_work(tiny_model, tokenizer):
    with pytest.raises(LorashearError, match="valid tasks"):
        run_zero_shot(tiny_model, tokenizer, ["nope"], limit=1)


def test_average_uses_acc_for_boolq_winogrande_and_acc_norm_elsewhere():
    assert {t for t, m in AVERAGE_METRIC.items() if m == "acc"} == {"boolq", "winogrande"}
    assert set(AVERAGE_METRIC) == set(ZERO_SHOT_TASKS)
    scores = {
        "boolq": TaskScore(acc=0.6, acc_norm=0.1, n=10),
        "winogrande": TaskScore(acc=0.5, acc_norm=0.1, n=10),
        "piqa": TaskScore(acc=0.1, acc_norm=0.7, n=10),
        "arc_easy": TaskScore(acc=0.1, acc_norm=0.4, n=10),
    }
    assert average(scores) == pytest.approx((0.6 + 0.5 + 0.7 + 0.4) / 4)
    assert average({}) is None
    assert "boolq:acc" in average_rule_text() and "hellaswag:acc_norm" in average_rule_text()
