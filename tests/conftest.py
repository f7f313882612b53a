"""Shared fixtures: tiny random models of real HF architectures, the default tokenizer."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def default_tokenizer():
    """The embedded default model's tokenizer (offline, from the packaged GGUF)."""
    from lorashear.models import DEFAULT_MODEL, load_tokenizer

    return load_tokenizer(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, default_tokenizer):
    """A tiny random LLaMA (GQA, tied embeddings) saved with the default tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "llama",
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=len(default_tokenizer),
        tie_word_embeddings=True,
        max_position_embeddings=1024,
    )
    model = AutoModelForCausalLM.from_config(config)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    default_tokenizer.save_pretrained(folder)
    return folder
