"""The time estimate printed before an evaluation: stages, their token counts, durations."""

from __future__ import annotations

import pytest

from lorashear.evaluate.estimate import (
    PPL,
    SPEED,
    TASK,
    TASK_SIZES,
    duration,
    forward_tokens_per_s,
    plan_steps,
)


def test_stages_in_order_with_their_tokens():
    stages = plan_steps(("wiki", "c4"), 8, 512, ("boolq", "hellaswag"), 100, speed=True)
    assert [(s.kind, s.name) for s in stages] == [(PPL, "ppl wiki"), (PPL, "ppl c4"), (TASK, "boolq"),
                                                 (TASK, "hellaswag"), (SPEED, "speed")]
    assert stages[0].tokens == 8 * 512
    boolq = TASK_SIZES["boolq"]
    assert stages[2].tokens == round(100 * boolq.requests_per_doc) * boolq.tokens_per_request
    assert stages[2].detail == f"100 documents, {round(100 * boolq.requests_per_doc)} requests"


def test_full_sets_are_the_69k_requests_of_the_issue():
    """No limit: every document (the run that took days on a CPU); a limit larger than a set is the set."""
    stages = plan_steps((), 1, 2, tuple(TASK_SIZES), None, speed=False)
    requests = sum(round(s.documents * s.requests_per_doc) for s in TASK_SIZES.values())
    assert 68_000 < requests < 70_000
    for stage, size in zip(stages, TASK_SIZES.values(), strict=True):
        assert stage.detail.startswith(f"{size.documents:,} documents, ")
    assert plan_steps((), 1, 2, ("openbookqa",), 10_000, False)[0].detail.startswith("500 documents")


@pytest.mark.parametrize("seconds,text", [(40, "40 s"), (720, "12 min"), (3.5 * 3600, "3.5 h"),
                                          (3 * 86400, "3.0 days")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_forward_speed_is_measured(tiny_model):
    assert forward_tokens_per_s(tiny_model, batch_size=2, length=16) > 0
