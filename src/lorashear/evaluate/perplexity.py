"""Perplexity on a corpus cut into non-overlapping windows.

The corpus's documents are joined with "\\n\\n" into one text and tokenized without special
tokens; the token stream is cut into non-overlapping `seq_len`-token windows (the remainder
dropped) and the first `windows` of them are scored. Inside a window every token but the first
is predicted from the ones before it, so PPL = exp(mean NLL over windows × (seq_len − 1) tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lorashear.data import EVAL, load_documents
from lorashear.errors import LorashearError

DOCUMENT_SEPARATOR = "\n\n"
DEFAULT_SEQ_LEN = 512
DEFAULT_WINDOWS = 128


@dataclass(frozen=True)
class PerplexityResult:
    """PPL of one corpus, with what was scored."""

    corpus: str
    ppl: float
    windows: int
    seq_len: int
    predicted_tokens: int


def check_windows(windows: int, seq_len: int = DEFAULT_SEQ_LEN) -> None:
    """Window count and length must be positive (a window needs two tokens to predict one)."""
    if isinstance(windows, bool) or not isinstance(windows, int) or windows <= 0:
        raise LorashearError(f"the number of perplexity windows must be a positive integer, got {windows!r}")
    if seq_len < 2:
        raise LorashearError(f"perplexity windows need at least 2 tokens, got seq_len={seq_len}")


def corpus_windows(corpus: str, tokenizer, windows: int, seq_len: int = DEFAULT_SEQ_LEN) -> torch.Tensor:
    """The first `windows` non-overlapping `seq_len`-token windows of a corpus, shape [windows, seq_len]."""
    check_windows(windows, seq_len)
    docs = load_documents(corpus, purpose=EVAL)
    needed = windows * seq_len
    # Tokenize only as much joined text as we need (whole documents, so the prefix is exact).
    text, ids = "", []
    for start in range(0, len(docs), 64):
        text += ("" if not text else DOCUMENT_SEPARATOR) + DOCUMENT_SEPARATOR.join(docs[start : start + 64])
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > needed + seq_len:  # a margin: the next document could merge with the last token
            break
    available = len(ids) // seq_len
    if available < windows:
        raise LorashearError(
            f"corpus '{corpus}' has only {available} windows of {seq_len} tokens; ask for at most {available}"
        )
    return torch.tensor(ids[:needed], dtype=torch.long).view(windows, seq_len)


@torch.no_grad()
def window_nll(model, input_ids: torch.Tensor) -> tuple[float, int]:
    """Summed NLL (float64) of every predicted token in a batch of windows, and their count."""
    logits = model(input_ids=input_ids, use_cache=False).logits[:, :-1].float()
    targets = input_ids[:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum")
    return float(nll.double()), targets.numel()


def perplexity(
    model,
    tokenizer,
    corpus: str = "wiki",
    *,
    windows: int = DEFAULT_WINDOWS,
    seq_len: int = DEFAULT_SEQ_LEN,
    batch_size: int = 4,
) -> PerplexityResult:
    """PPL of `model` on the first `windows` windows of a named corpus (or a local file)."""
    blocks = corpus_windows(corpus, tokenizer, windows, seq_len)
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    for start in tqdm(range(0, windows, batch_size), desc=f"ppl {corpus}", unit="batch"):
        nll, count = window_nll(model, blocks[start : start + batch_size].to(device))
        total_nll += nll
        total_tokens += count
    return PerplexityResult(corpus, math.exp(total_nll / total_tokens), windows, seq_len, total_tokens)
