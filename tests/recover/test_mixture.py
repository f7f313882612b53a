import math

import pytest

from lorashear.recover.mixture import DynamicMixture

NAMES = ["web", "code", "stories"]
DENSE = {"web": 3.0, "code": 2.0, "stories": 2.5}


def test_weight_moves_to_the_degraded_category():
    mix = DynamicMixture(NAMES, eta=1.0, smoothing=0.2)
    pruned = {"web": 3.1, "code": 3.5, "stories": 2.6}  # code degraded by 1.5 nats, the others by 0.1
    before = list(mix.weights)
    for step in range(5):
        weights = mix.update(pruned, DENSE, step=step)
        assert math.isclose(sum(weights), 1.0, abs_tol=1e-12)
    assert mix.weights[1] > before[1]
    assert mix.weights[1] > mix.weights[0] and mix.weights[1] > mix.weights[2]
    assert mix.weights[0] == pytest.approx(mix.weights[2])  # equal excess, equal weight


def test_update_follows_the_documented_rule():
    mix = DynamicMixture(NAMES, eta=2.0, smoothing=0.3)
    pruned = {"web": 3.4, "code": 1.0, "stories": 2.5}  # code is *better* than dense: excess 0, not negative
    mix.update(pruned, DENSE)
    raw = [1 / 3 * math.exp(2.0 * 0.4), 1 / 3, 1 / 3]
    expected = [0.7 * r / sum(raw) + 0.1 for r in raw]
    assert mix.weights == pytest.approx(expected, abs=1e-12)
    assert mix.history[0]["excess"] == pytest.approx({"web": 0.4, "code": 0.0, "stories": 0.0})


def test_floor_holds_under_extreme_degradation():
    mix = DynamicMixture(NAMES, eta=10.0, smoothing=0.15)
    for _ in range(50):
        mix.update({"web": 3.0, "code": 9.0, "stories": 2.5}, DENSE)
    assert min(mix.weights) >= mix.floor - 1e-12
    assert mix.weights[0] == pytest.approx(0.05) and mix.weights[2] == pytest.approx(0.05)
    assert sum(mix.weights) == pytest.approx(1.0)


def test_uniform_mode_keeps_weights_but_records_losses():
    mix = DynamicMixture(NAMES, dynamic=False)
    mix.update({"web": 9.0, "code": 2.0, "stories": 2.5}, DENSE, step=7)
    assert mix.weights == [1 / 3] * 3
    assert mix.history[0]["step"] == 7 and mix.history[0]["excess"]["web"] == pytest.approx(6.0)


def test_state_round_trip_and_mismatch():
    mix = DynamicMixture(NAMES)
    mix.update({"web": 4.0, "code": 2.0, "stories": 2.5}, DENSE)
    other = DynamicMixture(NAMES)
    other.load_state_dict(mix.state_dict())
    assert other.weights == mix.weights and other.history == mix.history
    with pytest.raises(ValueError, match="differ"):
        DynamicMixture(["a", "b"]).load_state_dict(mix.state_dict())
