import json

import pytest
import torch

from lorashear import LorashearError
from lorashear.data import (
    CORPORA,
    EVAL,
    TRAIN,
    ZERO_SHOT_TASKS,
    Instruction,
    load_documents,
    load_instructions,
    pack,
    split_documents,
    training_corpora,
)


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_every_named_corpus_loads(name):
    docs = load_documents(name, purpose=EVAL)
    assert len(docs) > 1 and all(isinstance(d, str) and d.strip() for d in docs)


def test_wiki_is_split_into_its_articles():
    docs = load_documents("wiki", purpose=EVAL)
    assert len(docs) == 2349 and not any("<doc" in d or "</doc>" in d for d in docs[:50])


@pytest.mark.parametrize("name", ["wiki", *ZERO_SHOT_TASKS])
def test_training_refuses_evaluation_data(name):
    with pytest.raises(LorashearError, match="evaluation-only"):
        load_documents(name, purpose=TRAIN)


def test_training_corpora_exclude_eval():
    assert "wiki" not in training_corpora() and "c4" in training_corpora()


def test_local_text_json_jsonl_and_saved_dataset(tmp_path):
    (tmp_path / "a.txt").write_text("first para\n\nsecond para\n")
    assert load_documents(str(tmp_path / "a.txt")) == ["first para", "second para"]
    (tmp_path / "b.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    assert load_documents(str(tmp_path / "b.jsonl")) == ["one", "two"]
    alpaca = [{"instruction": "Add", "input": "1+1", "output": "2"}]
    (tmp_path / "c.json").write_text(json.dumps(alpaca))
    [doc] = load_documents(str(tmp_path / "c.json"))
    assert "### Instruction:\nAdd" in doc and doc.endswith("### Response:\n2")
    import datasets

    datasets.Dataset.from_dict({"text": ["x y", "z"]}).save_to_disk(str(tmp_path / "ds"))
    assert load_documents(str(tmp_path / "ds")) == ["x y", "z"]


def test_bad_local_inputs(tmp_path):
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(LorashearError, match="unsupported file type"):
        load_documents(str(tmp_path / "x.csv"))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(LorashearError, match="empty"):
        load_documents(str(tmp_path / "empty.txt"))
    (tmp_path / "bad.json").write_text(json.dumps([{"foo": 1}]))
    with pytest.raises(LorashearError, match="'text' field or Alpaca fields"):
        load_documents(str(tmp_path / "bad.json"))
    with pytest.raises(LorashearError, match="unknown corpus"):
        load_documents("no-such-corpus")


def test_instructions_and_prompt_format():
    examples = load_instructions("alpaca-demo")
    assert len(examples) == 999
    ex = Instruction("Say hi", "", "hi")
    assert ex.text() == ex.prompt() + "hi" and "### Input" not in ex.prompt()
    assert "### Input:\nctx" in Instruction("Say", "ctx", "ok").prompt()
    with pytest.raises(LorashearError, match="plain text"):
        load_instructions("c4")


def test_pack_is_deterministic_and_separates_documents(default_tokenizer):
    docs = load_documents("tiny-stories")[:40]
    a = pack(docs, default_tokenizer, 64, seed=1)
    b = pack(docs, default_tokenizer, 64, seed=1)
    c = pack(docs, default_tokenizer, 64, seed=2)
    assert a.shape[1] == 64 and a.dtype == torch.long and torch.equal(a, b) and not torch.equal(a, c)
    assert (a == default_tokenizer.eos_token_id).any()
    assert pack(docs, default_tokenizer, 64, seed=1, max_sequences=3).shape == (3, 64)
    with pytest.raises(LorashearError, match="positive"):
        pack(docs, default_tokenizer, 0)
    with pytest.raises(LorashearError, match="not enough text"):
        pack(["hi"], default_tokenizer, 4096)


def test_split_documents_is_a_partition():
    docs = [str(i) for i in range(20)]
    train, held = split_documents(docs, 0.2, seed=3)
    assert len(held) == 4 and sorted(train + held) == sorted(docs)
    assert split_documents(docs, 0.2, seed=3) == (train, held)
