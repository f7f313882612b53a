"""Tiny material for recovery tests (a uniquely named module, so tests can import it next to other conftests)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

WORDS = {
    "animals": "cat dog bird fish horse cow sheep goat mouse lion".split(),
    "numbers": "one two three four five six seven eight nine ten".split(),
    "colors": "red green blue yellow black white purple orange pink grey".split(),
}


def _documents(words: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(30, 60))) + "." for _ in range(n)]


def make_tokenizer(folder: Path):
    """A byte-level BPE tokenizer trained in milliseconds on the test words, saved to `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = [d for words in WORDS.values() for d in _documents(words, 20, 0)]
    corpus += ["Below is an instruction that describes a task. ### Instruction: ### Response: ### Input:"] * 5
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")
    fast.save_pretrained(folder)
    return fast


def make_llama(folder: Path, tokenizer, intermediate: int, seed: int, hidden: int = 32, layers: int = 2,
               heads: int = 4) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = AutoConfig.for_model(
        "llama",
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_material(root: Path) -> dict:
    """Paths: dense and pruned model folders, three text categories, two instruction sources."""
    tokenizer = make_tokenizer(root / "tokenizer")
    dense = make_llama(root / "dense", tokenizer, intermediate=64, seed=0)
    pruned = make_llama(root / "pruned", tokenizer, intermediate=48, seed=1)
    texts = []
    for i, (name, words) in enumerate(WORDS.items()):
        path = root / f"{name}.txt"
        path.write_text("\n\n".join(_documents(words, 40, i + 1)))
        texts.append(str(path))
    sources = []
    for i, (name, words) in enumerate(list(WORDS.items())[:2]):
        docs = _documents(words, 40, 10 + i)
        records = [{"instruction": f"Say {d.split()[0]}", "input": "", "output": d} for d in docs]
        path = root / f"instruct_{name}.json"
        path.write_text(json.dumps(records))
        sources.append(str(path))
    return {"root": root, "dense": str(dense), "pruned": str(pruned), "data": texts, "instruct": sources}


def tiny_config(material: dict, out: Path, **overrides):
    """A recovery run of a few seconds on the tiny material."""
    from lorashear.recover import RecoverConfig

    values = dict(
        pruned=material["pruned"],
        dense=material["dense"],
        out=str(out),
        data=material["data"],
        instruct=material["instruct"],
        tokens=768,  # 12 steps of 2 x 32 tokens: 6 per stage
        seq_len=32,
        batch_size=2,
        grad_accum=1,
        lr=1e-2,
        mix_interval=2,
        mix_eta=20.0,
        eval_sequences=4,
        checkpoint_every=3,
    )
    values.update(overrides)
    return RecoverConfig(**values)
