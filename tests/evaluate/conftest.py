"""Shared fixtures: the default model's tokenizer (offline) and a tiny random LLaMA using it."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from lorashear.models import load_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer("smollm2-135m")


def _tiny_llama(vocab_size: int, **overrides) -> torch.nn.Module:
    """A 2-layer random LLaMA (GQA: 4 query heads, 2 KV heads, head_dim 16)."""
    config = AutoConfig.for_model(
        "llama",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        **overrides,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="session")
def make_tiny_llama(tokenizer):
    """Factory: a fresh tiny LLaMA over the tokenizer's vocabulary, config overrides allowed."""
    return lambda **overrides: _tiny_llama(len(tokenizer), **overrides)


@pytest.fixture(scope="session")
def tiny_model(make_tiny_llama):
    return make_tiny_llama()
