"""Tiny random models of every architecture the graph claims (no download), shared by graph and oracle tests."""

from __future__ import annotations

import logging
from functools import cache

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

# pytest's log capture turns torch tracing's structured trace logging on, which makes tracing slow.
logging.getLogger("torch.__trace").setLevel(logging.WARNING)

HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, MLP, VOCAB = 64, 2, 4, 2, 16, 96, 128

ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "granite", "olmo2",
         "gpt2", "opt"]
MHA_ARCHS = {"gpt2", "opt"}  # no grouped-query attention in these configs
# Per architecture: (tied embeddings, attention implementation, LoRA in the oracle). Together they
# cover tied and untied, eager and sdpa (gemma2 needs eager), with and without LoRA.
VARIANTS = {
    "llama": (True, "sdpa", True),
    "mistral": (False, "eager", False),
    "qwen2": (False, "sdpa", True),
    "qwen3": (True, "eager", True),
    "gemma": (True, "sdpa", False),
    "gemma2": (True, "eager", True),
    "gemma3_text": (True, "sdpa", True),
    "phi3": (False, "eager", True),
    "granite": (True, "sdpa", False),
    "olmo2": (False, "sdpa", True),
    "gpt2": (True, "eager", True),
    "opt": (True, "sdpa", False),
}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models run fastest on one thread; on a busy machine two spinning threads cost up to 100x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config_kwargs(model_type: str) -> dict:
    if model_type == "gpt2":
        return dict(n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=MLP, vocab_size=VOCAB, n_positions=64,
                    bos_token_id=0, eos_token_id=0)
    if model_type == "opt":
        return dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, ffn_dim=MLP,
                    vocab_size=VOCAB, word_embed_proj_dim=HIDDEN, max_position_embeddings=64, pad_token_id=1,
                    bos_token_id=2, eos_token_id=2)
    return dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM, intermediate_size=MLP, vocab_size=VOCAB,
                pad_token_id=0, bos_token_id=1, eos_token_id=2)


def tiny_model(model_type: str, lora: bool = False, seed: int = 0, attention: str | None = None,
               **overrides) -> torch.nn.Module:
    """A 2-layer random model with its VARIANTS settings (`attention` overrides its implementation) and
    non-trivial norms and biases; with `lora`, peft LoRA (r=8, all linear) with random (non-zero) B."""
    torch.manual_seed(seed)
    tied, attn, _ = VARIANTS[model_type]
    config = AutoConfig.for_model(model_type, **{**config_kwargs(model_type), "tie_word_embeddings": tied,
                                                 **overrides})
    config._attn_implementation = attention or attn
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # norms of ones and zero biases would hide compensation errors
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return with_random_lora(model, r=8) if lora else model


def with_random_lora(model: torch.nn.Module, r: int = 2) -> torch.nn.Module:
    """`model` with peft LoRA on every linear layer, B random rather than zero (so the adapter matters)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=r, target_modules="all-linear", init_lora_weights=False)).eval()


@cache
def model_and_graph(model_type: str, lora: bool = False):
    """One model and its graph (all kinds) per architecture, shared by the tests (do not modify them)."""
    from lorashear.graph import GROUP_KINDS, build_graph

    model = tiny_model(model_type, lora)
    return model, build_graph(model, kinds=GROUP_KINDS)


def tiny_llama(vocab_size: int, **overrides) -> torch.nn.Module:
    """A 2-layer random LLaMA (GQA: 4 query heads, 2 KV heads, head_dim 16, tied) over a real tokenizer's vocabulary."""
    config = AutoConfig.for_model(
        "llama",
        **{
            "hidden_size": HIDDEN,
            "intermediate_size": 128,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS,
            "head_dim": HEAD_DIM,
            "vocab_size": vocab_size,
            "max_position_embeddings": 1024,
            "tie_word_embeddings": True,
            **overrides,
        },
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()
