"""Fixtures of the recovery tests; the material itself is built in recover_material.py."""

from __future__ import annotations

import pytest
from recover_material import build_material


@pytest.fixture(scope="session")
def material(tmp_path_factory) -> dict:
    """Paths: dense and pruned tiny llama folders, three text categories, two instruction sources."""
    return build_material(tmp_path_factory.mktemp("recover-material"))


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Accelerate keeps process-wide singletons; each in-process run must start from a clean one."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
