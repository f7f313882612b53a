"""Shared fixtures: tiny random models of real HF architectures, the default tokenizer."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def default_tokenizer():
    """The embedded default model's tokenizer (offline, from the packaged GGUF)."""
    from lorashear.models import DEFAULT_MODEL, load_tokenizer

    return load_tokenizer(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, default_tokenizer):
    """A tiny random LLaMA (GQA, tied embeddings) saved with the default tokenizer."""
    from tiny_models import tiny_llama

    model = tiny_llama(len(default_tokenizer), intermediate_size=96)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    default_tokenizer.save_pretrained(folder)
    return folder
