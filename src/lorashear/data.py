"""Data: named corpora from packaged files, local files, hub data sets; tokenize and pack.

Every corpus is marked for training/calibration or for evaluation only. The training loader
refuses evaluation-only corpora, so no reported result can be contaminated.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lorashear.assets import EXLLAMAV2, LLAMAFACTORY, ArchiveFiles
from lorashear.errors import LorashearError

TRAIN = "train"
EVAL = "eval"

# The zero-shot task sets are evaluation data too (see lorashear.evaluate).
ZERO_SHOT_TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")


@dataclass(frozen=True)
class Corpus:
    """A named corpus shipped by a registry package."""

    name: str
    archive: ArchiveFiles
    filename: str
    layout: str  # "wiki-docs" | "paragraphs" | "lines" | "jsonl-text" | "alpaca-json"
    purpose: str  # TRAIN or EVAL
    description: str

    def path(self) -> Path:
        return self.archive.path(self.filename)


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in (
        Corpus("wiki", EXLLAMAV2, "wiki.utf8", "wiki-docs", EVAL, "2,349 Wikipedia articles (evaluation only)"),
        Corpus("c4", EXLLAMAV2, "c4.utf8", "lines", TRAIN, "C4 web documents"),
        Corpus("code", EXLLAMAV2, "code.utf8", "paragraphs", TRAIN, "source code"),
        Corpus("technical", EXLLAMAV2, "technical.utf8", "paragraphs", TRAIN, "technical writing"),
        Corpus("tiny-stories", EXLLAMAV2, "tiny.utf8", "paragraphs", TRAIN, "TinyStories"),
        Corpus("multilingual", EXLLAMAV2, "multilingual.utf8", "paragraphs", TRAIN, "multilingual text"),
        Corpus("alpaca-demo", LLAMAFACTORY, "alpaca_en_demo.json", "alpaca-json", TRAIN, "999 Alpaca instructions"),
        Corpus("c4-demo", LLAMAFACTORY, "c4_demo.jsonl", "jsonl-text", TRAIN, "300 C4 web documents"),
        Corpus("wiki-demo", LLAMAFACTORY, "wiki_demo.txt", "lines", TRAIN, "30 long Wikipedia articles"),
    )
}
PRETRAIN_CORPORA = ("c4", "code", "technical", "tiny-stories", "multilingual")


@dataclass(frozen=True)
class Instruction:
    """One Alpaca-format example."""

    instruction: str
    input: str
    output: str

    def prompt(self) -> str:
        """The Alpaca prompt (the part the model is not trained to produce)."""
        if self.input:
            return (
                "Below is an instruction that describes a task, paired with an input that provides further "
                "context. Write a response that appropriately completes the request.\n\n"
                f"### Instruction:\n{self.instruction}\n\n### Input:\n{self.input}\n\n### Response:\n"
            )
        return (
            "Below is an instruction that describes a task. Write a response that appropriately completes "
            f"the request.\n\n### Instruction:\n{self.instruction}\n\n### Response:\n"
        )

    def text(self) -> str:
        return self.prompt() + self.output


# ---------------------------------------------------------------- reading files


def _split_wiki_docs(raw: str) -> list[str]:
    docs = re.findall(r"<doc[^>]*>\n?(.*?)</doc>", raw, flags=re.S)
    return [d.strip() for d in docs if d.strip()]


def _split_paragraphs(raw: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", raw) if p.strip()]


def _records(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if isinstance(data, dict):  # {"data": [...]} or {"train": [...]}
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise LorashearError(f"{path}: expected a JSON list of records")
        data = lists[0]
    if not isinstance(data, list):
        raise LorashearError(f"{path}: expected a JSON list of records")
    return data


def _record_text(record: dict, source: str) -> str:
    if "text" in record:
        return str(record["text"])
    if "instruction" in record and "output" in record:
        return _instruction(record).text()
    raise LorashearError(f"{source}: records need a 'text' field or Alpaca fields (instruction, input, output)")


def _instruction(record: dict) -> Instruction:
    return Instruction(str(record["instruction"]), str(record.get("input") or ""), str(record["output"]))


def _read_local(path: Path) -> list[dict] | list[str]:
    """Records (dicts) for structured files, documents (str) for text files."""
    if path.is_dir():
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as err:
            raise LorashearError(f"{path} is not a saved Hugging Face dataset: {err}") from err
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else next(iter(ds.values()))
        return [dict(r) for r in ds]
    if path.suffix in (".json", ".jsonl"):
        return _records(path)
    if path.suffix in (".txt", ".utf8", ".md", ""):
        return _split_paragraphs(path.read_text(encoding="utf-8"))
    raise LorashearError(f"{path}: unsupported file type (use .txt, .json, .jsonl or a saved dataset folder)")


def _read_hub(name: str) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_dataset(name, split="train")
    except Exception as err:  # the hub raises many types; all mean "cannot get it"
        raise LorashearError(f"could not load data set '{name}' from the hub: {err}") from err
    return [dict(r) for r in ds]


def refuse_evaluation_data(spec: str) -> None:
    """Raise a clear error when `spec` names evaluation-only data (before any loading)."""
    _check_purpose(spec, TRAIN)


def _check_purpose(spec: str, purpose: str) -> None:
    corpus = CORPORA.get(spec)
    eval_only = (corpus is not None and corpus.purpose == EVAL) or spec in ZERO_SHOT_TASKS
    if purpose == TRAIN and eval_only:
        raise LorashearError(
            f"'{spec}' is evaluation-only data and cannot be used for training or calibration "
            f"(that would contaminate results); use one of: {', '.join(training_corpora())}"
        )


def _resolve_raw(spec: str) -> list[dict] | list[str]:
    if spec in CORPORA:
        corpus = CORPORA[spec]
        path = corpus.path()
        if corpus.layout == "wiki-docs":
            return _split_wiki_docs(path.read_text(encoding="utf-8"))
        if corpus.layout == "paragraphs":
            return _split_paragraphs(path.read_text(encoding="utf-8"))
        if corpus.layout == "lines":
            return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return _records(path)
    path = Path(spec).expanduser()
    if path.exists():
        return _read_local(path)
    if "/" in spec and not spec.startswith((".", "/", "~")) and not Path(spec).suffix:
        return _read_hub(spec)
    raise LorashearError(
        f"unknown corpus '{spec}': not a named corpus ({', '.join(CORPORA)}), an existing file or folder, "
        "or a hub data set id (org/name)"
    )


# ---------------------------------------------------------------- public loaders


def training_corpora() -> list[str]:
    return [n for n, c in CORPORA.items() if c.purpose == TRAIN]


def load_documents(spec: str, purpose: str = TRAIN) -> list[str]:
    """Documents (strings) of a corpus; `purpose=TRAIN` refuses evaluation-only corpora."""
    if purpose not in (TRAIN, EVAL):
        raise ValueError(f"purpose must be {TRAIN!r} or {EVAL!r}")
    _check_purpose(spec, purpose)
    raw = _resolve_raw(spec)
    docs = [r if isinstance(r, str) else _record_text(r, spec) for r in raw]
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise LorashearError(f"corpus '{spec}' is empty")
    return docs


def load_instructions(spec: str) -> list[Instruction]:
    """Alpaca-format instruction examples (training data)."""
    _check_purpose(spec, TRAIN)
    raw = _resolve_raw(spec)
    if not raw or isinstance(raw[0], str):
        raise LorashearError(f"'{spec}' holds plain text; instruction data needs instruction/input/output fields")
    try:
        examples = [_instruction(r) for r in raw]
    except KeyError as err:
        raise LorashearError(f"'{spec}': every record needs 'instruction' and 'output' fields") from err
    if not examples:
        raise LorashearError(f"instruction data '{spec}' is empty")
    return examples


def tokenize_documents(docs: Sequence[str], tokenizer) -> list[int]:
    """Token ids of the documents, each followed by EOS, concatenated."""
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    for enc in tokenizer(list(docs), add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        if eos is not None:
            ids.append(eos)
    return ids


def pack(
    docs: Sequence[str],
    tokenizer,
    seq_len: int,
    *,
    seed: int = 0,
    max_sequences: int | None = None,
    shuffle: bool = True,
) -> torch.Tensor:
    """Tokenize, concatenate and cut into [n, seq_len] blocks (remainder dropped); deterministic per seed."""
    if seq_len <= 0:
        raise LorashearError("sequence length must be positive")
    ids = tokenize_documents(docs, tokenizer)
    n = len(ids) // seq_len
    if n == 0:
        raise LorashearError(f"not enough text for one sequence of {seq_len} tokens ({len(ids)} tokens)")
    blocks = torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)
    if shuffle:
        order = list(range(n))
        random.Random(seed).shuffle(order)
        blocks = blocks[order]
    if max_sequences is not None:
        blocks = blocks[:max_sequences]
    return blocks


def split_documents(docs: Sequence[str], held_out: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """A deterministic (train, held-out) split of documents."""
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    k = max(1, int(round(len(docs) * held_out))) if held_out > 0 else 0
    held = [docs[i] for i in order[:k]]
    train = [docs[i] for i in order[k:]]
    return train, held
