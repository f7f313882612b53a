"""A byte-level BPE tokenizer (GPT-2 style: SmolLM2, Qwen2, Llama 3) as llama.cpp's `gpt2` tokenizer metadata."""

from __future__ import annotations

import json

import gguf

from lorashear.errors import LorashearError

# llama.cpp's pre-tokenizer names, keyed by the tokenizers pre_tokenizer they reproduce.
GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
LLAMA3_REGEX = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)
QWEN2_REGEX = LLAMA3_REGEX.replace("\\p{N}{1,3}", "\\p{N}")


def pre_tokenizer_key(pre: dict | None) -> tuple:
    """A pre_tokenizer (tokenizer.json) reduced to what decides how text is split."""
    if pre is None:
        return ()
    if pre["type"] == "Sequence":
        return tuple(k for p in pre["pretokenizers"] for k in pre_tokenizer_key(p))
    if pre["type"] == "ByteLevel":
        return ("bytelevel-regex",) if pre.get("use_regex", True) else ("bytelevel",)
    if pre["type"] == "Digits":
        return ("digits-individual" if pre.get("individual_digits") else "digits",)
    if pre["type"] == "Split":
        return ("split:" + pre["pattern"].get("Regex", pre["pattern"].get("String", "")),)
    return (pre["type"],)


PRE_TOKENIZERS = {
    ("bytelevel-regex",): "gpt-2",
    ("digits-individual", "bytelevel-regex"): "smollm",
    ("split:" + LLAMA3_REGEX, "bytelevel"): "llama-bpe",
    ("split:" + QWEN2_REGEX, "bytelevel"): "qwen2",
}


def tokenizer_json(tokenizer) -> dict:
    """The tokenizers-library description of a HF fast tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise LorashearError(f"{type(tokenizer).__name__} is not a fast (tokenizers) tokenizer; GGUF export needs one")
    return json.loads(backend.to_str())


def bpe_pre_type(spec: dict) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer; LorashearError for one it does not have."""
    if spec["model"]["type"] != "BPE":
        raise LorashearError(
            f"GGUF export supports byte-level BPE tokenizers (GPT-2 style); this one is {spec['model']['type']}"
        )
    key = pre_tokenizer_key(spec.get("pre_tokenizer"))
    if key not in PRE_TOKENIZERS:
        raise LorashearError(
            f"llama.cpp has no pre-tokenizer matching this tokenizer's {key}; supported: GPT-2, SmolLM, Llama 3, Qwen2"
        )
    return PRE_TOKENIZERS[key]


def token_table(spec: dict, n_vocab: int) -> tuple[list[str], list[int]]:
    """Every embedding row's token text and llama.cpp type; rows beyond the tokenizer are unused padding."""
    texts: dict[int, str] = {i: t for t, i in spec["model"]["vocab"].items()}
    types = {i: gguf.TokenType.NORMAL for i in texts}
    for added in spec.get("added_tokens", []):
        texts[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED
    if max(texts) >= n_vocab:
        raise LorashearError(f"the tokenizer has token id {max(texts)} but the model only {n_vocab} embedding rows")
    tokens = [texts.get(i, f"[PAD{i}]") for i in range(n_vocab)]
    return tokens, [int(types.get(i, gguf.TokenType.UNUSED)) for i in range(n_vocab)]


def adds_token(tokenizer, token_id: int | None, first: bool) -> bool:
    """Whether encoding text puts `token_id` first (BOS) or last (EOS)."""
    ids = tokenizer("a").input_ids
    return token_id is not None and bool(ids) and ids[0 if first else -1] == token_id


def add_tokenizer(writer: gguf.GGUFWriter, tokenizer, n_vocab: int) -> None:
    """Write the tokenizer as llama.cpp's `gpt2` BPE: tokens, types, merges, special ids and flags."""
    spec = tokenizer_json(tokenizer)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(bpe_pre_type(spec))
    tokens, types = token_table(spec, n_vocab)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    merges = spec["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    writer.add_add_bos_token(adds_token(tokenizer, tokenizer.bos_token_id, first=True))
    writer.add_add_eos_token(adds_token(tokenizer, tokenizer.eos_token_id, first=False))
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str):
        writer.add_chat_template(template)
