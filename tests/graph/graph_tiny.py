"""Tiny random models of every architecture the graph claims (no download)."""

from __future__ import annotations

from functools import cache

import torch
from transformers import AutoConfig, AutoModelForCausalLM

HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, MLP, VOCAB = 64, 2, 4, 2, 16, 96, 128

ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "granite", "olmo2",
         "gpt2", "opt"]
MHA_ARCHS = {"gpt2", "opt"}  # no grouped-query attention in these configs


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


def tiny_model(model_type: str, lora: bool = False, seed: int = 0, **overrides) -> torch.nn.Module:
    """A 2-layer random model; with `lora`, peft LoRA (r=8, all linear) with random (non-zero) B."""
    torch.manual_seed(seed)
    config = AutoConfig.for_model(model_type, **{**config_kwargs(model_type), **overrides})
    model = AutoModelForCausalLM.from_config(config).eval()
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False)).eval()
    return model


@cache
def model_and_graph(model_type: str, lora: bool = False):
    """One model and its graph (all kinds) per architecture, shared by the tests."""
    from lorashear.graph import GROUP_KINDS, build_graph

    model = tiny_model(model_type, lora)
    return model, build_graph(model, kinds=GROUP_KINDS)
