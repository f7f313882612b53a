import math

import pytest
import torch

from lorashear.recover.losses import kd_loss, lm_loss, recovery_loss
from lorashear.recover.streams import IGNORE


def _case(seed=0, vocab=11):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(2, 5, vocab, generator=g)
    teacher = torch.randn(2, 5, vocab, generator=g)
    labels = torch.randint(0, vocab, (2, 5), generator=g)
    labels[0, 1:3] = IGNORE  # targets at positions 1 and 2 of row 0 carry no loss
    return student, teacher, labels


def test_kd_loss_equals_a_direct_kl():
    student, teacher, labels = _case()
    t = 2.5
    terms = []
    for b in range(2):
        for pos in range(4):  # position pos predicts token pos + 1
            if labels[b, pos + 1] == IGNORE:
                continue
            p = torch.softmax(teacher[b, pos].double() / t, -1)
            q = torch.softmax(student[b, pos].double() / t, -1)
            terms.append(float((p * (p.log() - q.log())).sum()))
    expected = t * t * sum(terms) / len(terms)
    assert len(terms) == 6
    assert kd_loss(student, teacher, labels, t).item() == pytest.approx(expected, rel=1e-5)
    assert kd_loss(teacher, teacher, labels, t).item() == pytest.approx(0.0, abs=1e-6)


def test_lm_loss_skips_ignored_targets():
    student, _, labels = _case()
    terms = [
        -torch.log_softmax(student[b, pos], -1)[labels[b, pos + 1]].item()
        for b in range(2)
        for pos in range(4)
        if labels[b, pos + 1] != IGNORE
    ]
    assert lm_loss(student, labels).item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)
    none = torch.full_like(labels, IGNORE)
    assert lm_loss(student, none).item() == 0.0  # a block with no targets gives no loss, not NaN


def test_recovery_loss_mixes_ce_and_kd():
    student, teacher, labels = _case(1)
    loss, parts = recovery_loss(student, labels, teacher, kd_weight=0.3, temperature=2.0)
    assert loss.item() == pytest.approx(0.7 * parts["lm_loss"] + 0.3 * parts["kd_loss"], rel=1e-6)
    plain, parts = recovery_loss(student, labels, teacher, kd_weight=0.0)
    assert "kd_loss" not in parts and math.isclose(plain.item(), lm_loss(student, labels).item())
