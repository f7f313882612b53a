"""An autouse fixture for tests that run Accelerate in-process (import it into a conftest)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps process-wide singletons; each in-process run must start from a clean one."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
