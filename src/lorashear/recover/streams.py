"""Data streams: each category packed into fixed-length blocks, sampled by mixture weights.

Stage 1 blocks are packed documents (every token is a target). Stage 2 blocks are packed Alpaca
examples whose prompt tokens carry label -100, so the loss falls on the responses only.
Every process draws the same *global* batch from the same generator and keeps its own rows, so
a run on k processes sees the same data as one process with a k times larger batch, and the
stream's position (generator, cursors) is a small state that checkpoints exactly.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lorashear.data import Instruction, load_documents, load_instructions, pack, split_documents
from lorashear.errors import LorashearError
from lorashear.train.loop import shard_rows

__all__ = ["IGNORE", "Category", "MixedStream", "pack_instructions", "shard_rows"]

IGNORE = -100  # label of tokens that carry no loss (cross-entropy's ignore_index)


@dataclass
class Category:
    """One data category: training and held-out blocks, with their labels."""

    name: str
    input_ids: torch.Tensor  # [n, seq_len]
    labels: torch.Tensor  # [n, seq_len], IGNORE where no loss
    held_input_ids: torch.Tensor  # [m, seq_len]
    held_labels: torch.Tensor


def category_name(spec: str) -> str:
    """A short, readable name for a data argument (a corpus name, or a file's stem)."""
    path = Path(spec)
    return path.stem if path.suffix or path.exists() else spec


def _unique_names(specs: Sequence[str]) -> list[str]:
    names = [category_name(s) for s in specs]
    if len(set(names)) != len(names):
        return list(specs)  # fall back to the full arguments when stems collide
    return names


def text_categories(specs: Sequence[str], tokenizer, seq_len: int, held_out: float, seed: int) -> list[Category]:
    """Stage 1: one category per corpus, documents split into train / held-out before packing
    (`held_out` 0: every document trains, the held-out blocks are empty)."""
    categories = []
    for spec, name in zip(specs, _unique_names(specs), strict=True):
        docs = load_documents(spec, purpose="train")
        if held_out > 0 and len(docs) < 2:
            raise LorashearError(f"'{spec}' has {len(docs)} document; need at least 2 to hold one out for the mix")
        train_docs, held_docs = split_documents(docs, held_out, seed=seed)
        train = _packed_or_error(lambda d=train_docs: pack(d, tokenizer, seq_len, seed=seed), spec, seq_len)
        held = torch.empty((0, seq_len), dtype=torch.long)
        if held_docs:
            held = _packed_or_error(lambda d=held_docs: pack(d, tokenizer, seq_len, seed=seed), spec, seq_len,
                                    "held-out ")
        categories.append(Category(name, train, train.clone(), held, held.clone()))
    return categories


def instruction_categories(
    specs: Sequence[str], tokenizer, seq_len: int, held_out: float, seed: int
) -> list[Category]:
    """Stage 2: one category per instruction source, packed with response-only labels."""
    categories = []
    for spec, name in zip(specs, _unique_names(specs), strict=True):
        examples = load_instructions(spec)
        if len(examples) < 2:
            raise LorashearError(f"'{spec}' has {len(examples)} example; need at least 2 to hold one out")
        order = list(range(len(examples)))
        random.Random(seed).shuffle(order)
        k = max(1, round(len(examples) * held_out))
        held = [examples[i] for i in order[:k]]
        train = [examples[i] for i in order[k:]]
        ids, labels = _packed_or_error(lambda e=train: pack_instructions(e, tokenizer, seq_len), spec, seq_len)
        held_ids, held_labels = _packed_or_error(
            lambda e=held: pack_instructions(e, tokenizer, seq_len), spec, seq_len, "held-out "
        )
        categories.append(Category(name, ids, labels, held_ids, held_labels))
    return categories


def _packed_or_error(build, spec: str, seq_len: int, what: str = ""):
    try:
        return build()
    except LorashearError as err:
        raise LorashearError(f"'{spec}': too little {what}data for blocks of {seq_len} tokens ({err})") from err


def pack_instructions(
    examples: Sequence[Instruction], tokenizer, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate prompt + response + EOS of every example into [n, seq_len] blocks; prompts get IGNORE labels."""
    # Prompt and response are tokenized apart so the loss boundary is exact.
    prompts = tokenizer([e.prompt() for e in examples], add_special_tokens=False)["input_ids"]
    responses = tokenizer([e.output for e in examples], add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids: list[int] = []
    labels: list[int] = []
    for prompt, response in zip(prompts, responses, strict=True):
        ids += prompt + response + eos
        labels += [IGNORE] * len(prompt) + response + eos
    n = len(ids) // seq_len
    if n == 0:
        raise LorashearError(f"{len(ids)} tokens, less than one block")
    cut = n * seq_len
    return (
        torch.tensor(ids[:cut], dtype=torch.long).view(n, seq_len),
        torch.tensor(labels[:cut], dtype=torch.long).view(n, seq_len),
    )


class MixedStream:
    """An endless stream of global batches: category per row from the weights, blocks in per-epoch shuffled order."""

    def __init__(self, categories: Sequence[Category], seed: int) -> None:
        if not categories:
            raise LorashearError("no data categories")
        self.categories = list(categories)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.cursors = [0] * len(self.categories)
        self.epochs = [0] * len(self.categories)
        self._orders = [self._order(i) for i in range(len(self.categories))]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.categories]

    def _order(self, index: int) -> torch.Tensor:
        # A fresh generator per (category, epoch): the order is a function of the state, not stored in it.
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index * 10_007 + self.epochs[index])
        return torch.randperm(len(self.categories[index].input_ids), generator=g)

    def next_batch(self, weights: Sequence[float], global_rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids, labels, category index per row) of one global batch."""
        picks = torch.multinomial(torch.tensor(weights, dtype=torch.float64), global_rows, True, generator=self.generator)
        ids, labels = [], []
        for cat in picks.tolist():
            if self.cursors[cat] == len(self._orders[cat]):
                self.epochs[cat] += 1
                self.cursors[cat] = 0
                self._orders[cat] = self._order(cat)
            block = int(self._orders[cat][self.cursors[cat]])
            self.cursors[cat] += 1
            ids.append(self.categories[cat].input_ids[block])
            labels.append(self.categories[cat].labels[block])
        return torch.stack(ids), torch.stack(labels), picks

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "cursors": list(self.cursors), "epochs": list(self.epochs)}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.cursors = list(state["cursors"])
        self.epochs = list(state["epochs"])
        self._orders = [self._order(i) for i in range(len(self.categories))]
