"""Perplexity on a corpus cut into non-overlapping windows.

The corpus's documents are joined with "\\n\\n" into one text and tokenized without special
tokens; the token stream is cut into non-overlapping windows (the remainder dropped) and the
first `windows` of them are scored. When the tokenizer has a BOS token, each window is
[BOS] + `seq_len` − 1 text tokens and every text token is predicted (as lm-eval's rolling
loglikelihood prefixes it; Gemma-family models degrade badly without it); otherwise a window is
`seq_len` text tokens and all but the first are predicted. Either way
PPL = exp(mean NLL over windows × (seq_len − 1) predicted tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lorashear.data import EVAL, load_documents
from lorashear.errors import LorashearError
from lorashear.models import input_device

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
    bos: str | None = None  # the token each window starts with, or None (no BOS: text tokens only)

    def describe(self) -> str:
        """What a window is, to print next to the figure: e.g. "128 × 512 (BOS <s> + 511 text tokens)"."""
        if self.bos is None:
            return f"{self.windows} × {self.seq_len} (text tokens, no BOS)"
        return f"{self.windows} × {self.seq_len} (BOS {self.bos} + {self.seq_len - 1} text tokens)"


def check_windows(windows: int, seq_len: int = DEFAULT_SEQ_LEN) -> None:
    """Window count and length must be positive (a window needs two tokens to predict one)."""
    if isinstance(windows, bool) or not isinstance(windows, int) or windows <= 0:
        raise LorashearError(f"the number of perplexity windows must be a positive integer, got {windows!r}")
    if seq_len < 2:
        raise LorashearError(f"perplexity windows need at least 2 tokens, got seq_len={seq_len}")


def bos_token_id(tokenizer) -> int | None:
    """The tokenizer's BOS id (None when it has none)."""
    return getattr(tokenizer, "bos_token_id", None)


def corpus_windows(corpus: str, tokenizer, windows: int, seq_len: int = DEFAULT_SEQ_LEN) -> torch.Tensor:
    """The first `windows` non-overlapping windows of a corpus, shape [windows, seq_len]: each the
    tokenizer's BOS and `seq_len` − 1 text tokens, or `seq_len` text tokens without a BOS token."""
    check_windows(windows, seq_len)
    docs = load_documents(corpus, purpose=EVAL)
    bos = bos_token_id(tokenizer)
    text_len = seq_len if bos is None else seq_len - 1
    needed = windows * text_len
    # Tokenize only as much joined text as we need (whole documents, so the prefix is exact).
    text, ids = "", []
    for start in range(0, len(docs), 64):
        text += ("" if not text else DOCUMENT_SEPARATOR) + DOCUMENT_SEPARATOR.join(docs[start : start + 64])
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > needed + text_len:  # a margin: the next document could merge with the last token
            break
    available = len(ids) // text_len
    if available < windows:
        raise LorashearError(
            f"corpus '{corpus}' has only {available} windows of {seq_len} tokens; ask for at most {available}"
        )
    text = torch.tensor(ids[:needed], dtype=torch.long).view(windows, text_len)
    if bos is None:
        return text
    return torch.cat([torch.full((windows, 1), bos, dtype=torch.long), text], dim=1)


@torch.no_grad()
def window_nll(model, input_ids: torch.Tensor) -> tuple[float, int]:
    """Summed NLL (float64) of every predicted token in a batch of windows, and their count."""
    logits = model(input_ids=input_ids, use_cache=False).logits[:, :-1].float()
    targets = input_ids[:, 1:].to(logits.device)  # the last layer's device, when the model is spread over devices
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
    device = input_device(model)
    total_nll, total_tokens = 0.0, 0
    for start in tqdm(range(0, windows, batch_size), desc=f"ppl {corpus}", unit="batch"):
        nll, count = window_nll(model, blocks[start : start + batch_size].to(device))
        total_nll += nll
        total_tokens += count
    bos = tokenizer.bos_token if bos_token_id(tokenizer) is not None else None
    return PerplexityResult(corpus, math.exp(total_nll / total_tokens), windows, seq_len, total_tokens, bos)
