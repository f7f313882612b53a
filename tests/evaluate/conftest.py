"""Shared fixtures: the default model's tokenizer (offline) and a tiny random LLaMA using it."""

from __future__ import annotations

import pytest
from tiny_models import tiny_llama


@pytest.fixture(scope="session")
def tokenizer(default_tokenizer):
    """The session's one copy of the default tokenizer (tests/conftest.py), under a shorter name."""
    return default_tokenizer


@pytest.fixture(scope="session")
def make_tiny_llama(tokenizer):
    """Factory: a fresh tiny LLaMA over the tokenizer's vocabulary, config overrides allowed."""
    return lambda **overrides: tiny_llama(len(tokenizer), **overrides)


@pytest.fixture(scope="session")
def tiny_model(make_tiny_llama):
    return make_tiny_llama()
