"""Fixtures of the prune tests."""

from __future__ import annotations

import copy

import pytest

import lorashear.compress
import lorashear.prune.api


@pytest.fixture
def merged_models(monkeypatch) -> list:
    """Copies of the model `prune_model` hands to compress: the method's result, LoRA merged, not yet compressed."""
    seen = []
    real = lorashear.compress.compress

    def keep_a_copy(model, groups):
        seen.append(copy.deepcopy(model))
        return real(model, groups)

    monkeypatch.setattr(lorashear.prune.api, "compress", keep_a_copy)  # where prune_model calls it
    return seen
