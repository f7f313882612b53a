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


@pytest.fixture(scope="session")
def small_tokenizer():
    """A 300-token byte-level BPE tokenizer (trained in a second), so tiny models stay mostly layers, not embeddings."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from lorashear.data import load_documents

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(load_documents("tiny-stories")[:200], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


@pytest.fixture(scope="session")
def small_vocab_dirs(tmp_path_factory, small_tokenizer) -> dict:
    """Tiny 4-layer llama (GQA), qwen2 and gpt2 (LayerNorm) folders over the 300-token tokenizer."""
    from tiny_models import tiny_model

    out = {}
    for arch in ("llama", "qwen2", "gpt2"):
        folder = tmp_path_factory.mktemp(f"small-{arch}")
        size = {"n_positions": 512, "n_layer": 4} if arch == "gpt2" else {"max_position_embeddings": 512,
                                                                            "num_hidden_layers": 4}
        # + 20: some tokenizer classes (Qwen2Tokenizer) add tokens of their own
        tiny_model(arch, vocab_size=len(small_tokenizer) + 20, **size).save_pretrained(folder)
        small_tokenizer.save_pretrained(folder)
        out[arch] = folder
    return out
