import copy
import math

import pytest
import torch
import torch.nn.functional as F

from lorashear.data import load_documents
from lorashear.errors import LorashearError
from lorashear.evaluate.perplexity import DOCUMENT_SEPARATOR, corpus_windows, perplexity


@pytest.fixture(scope="module")
def tokenizer_without_bos(tokenizer):
    plain = copy.deepcopy(tokenizer)
    plain.bos_token = None
    assert plain.bos_token_id is None
    return plain


def wiki_ids(tokenizer, n: int) -> list[int]:
    docs = load_documents("wiki", purpose="eval")
    ids = tokenizer(DOCUMENT_SEPARATOR.join(docs[:20]), add_special_tokens=False)["input_ids"]
    assert len(ids) > n
    return ids[:n]


def test_windows_are_bos_and_the_joined_corpus_cut_in_order(tokenizer):
    """Each window: the tokenizer's BOS, then the next seq_len - 1 text tokens."""
    assert tokenizer.bos_token_id is not None
    blocks = corpus_windows("wiki", tokenizer, windows=3, seq_len=128)
    assert blocks.shape == (3, 128)
    assert blocks[:, 0].tolist() == [tokenizer.bos_token_id] * 3
    assert blocks[:, 1:].flatten().tolist() == wiki_ids(tokenizer, 3 * 127)


def test_without_bos_windows_are_text_only(tokenizer_without_bos, tiny_model):
    blocks = corpus_windows("wiki", tokenizer_without_bos, windows=3, seq_len=128)
    assert blocks.shape == (3, 128)
    assert blocks.flatten().tolist() == wiki_ids(tokenizer_without_bos, 3 * 128)
    result = perplexity(tiny_model, tokenizer_without_bos, "wiki", windows=1, seq_len=64)
    assert result.bos is None and result.predicted_tokens == 63
    assert result.describe() == "1 × 64 (text tokens, no BOS)"


def test_perplexity_equals_direct_computation(tiny_model, tokenizer):
    windows, seq_len = 5, 64
    result = perplexity(tiny_model, tokenizer, "wiki", windows=windows, seq_len=seq_len, batch_size=2)
    blocks = corpus_windows("wiki", tokenizer, windows, seq_len)
    with torch.no_grad():
        logits = torch.cat([tiny_model(input_ids=b[None]).logits for b in blocks])  # one window at a time
    expected = math.exp(F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), blocks[:, 1:].reshape(-1)).item())
    assert result.ppl == pytest.approx(expected, rel=1e-5)
    assert result.windows == windows
    assert result.predicted_tokens == windows * (seq_len - 1)
    assert result.corpus == "wiki"
    assert result.bos == tokenizer.bos_token and blocks[0, 0] == tokenizer.bos_token_id
    assert result.describe() == f"5 × 64 (BOS {tokenizer.bos_token} + 63 text tokens)"


def test_windows_count_changes_the_result(tiny_model, tokenizer):
    one = perplexity(tiny_model, tokenizer, "wiki", windows=1, seq_len=64)
    three = perplexity(tiny_model, tokenizer, "wiki", windows=3, seq_len=64)
    assert one.predicted_tokens == 63 and three.predicted_tokens == 3 * 63
    assert one.ppl != three.ppl


@pytest.mark.parametrize("windows", [0, -3])
def test_non_positive_windows_are_refused(tokenizer, windows):
    with pytest.raises(LorashearError, match="positive"):
        corpus_windows("wiki", tokenizer, windows)


def test_too_short_corpus_says_how_many_windows_exist(tokenizer, tmp_path):
    path = tmp_path / "small.txt"
    path.write_text("A short text.\n\nAnother paragraph of text.")
    with pytest.raises(LorashearError, match="only 0 windows"):
        corpus_windows(str(path), tokenizer, 1)


def test_unknown_corpus_is_refused(tokenizer):
    with pytest.raises(LorashearError, match="unknown corpus"):
        corpus_windows("no-such-corpus", tokenizer, 1)
