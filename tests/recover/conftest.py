"""Fixtures of the recovery tests; the material itself is built in recover_material.py."""

from __future__ import annotations

import pytest
from accelerate_state import fresh_accelerate_state  # noqa: F401
from recover_material import build_material


@pytest.fixture(scope="session")
def material(tmp_path_factory) -> dict:
    """Paths: dense and pruned tiny llama folders, three text categories, two instruction sources."""
    return build_material(tmp_path_factory.mktemp("recover-material"))
