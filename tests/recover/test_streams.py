import torch
from transformers import AutoTokenizer

from lorashear.data import Instruction
from lorashear.recover.streams import IGNORE, Category, MixedStream, pack_instructions, shard_rows


def test_stage2_labels_cover_responses_only(material):
    tokenizer = AutoTokenizer.from_pretrained(material["dense"])
    examples = [Instruction("Name an animal", "", "cat dog"), Instruction("Count", "to three", "one two three")]
    seq_len = 8
    ids, labels = pack_instructions(examples, tokenizer, seq_len)
    flat_ids, flat_labels = ids.flatten().tolist(), labels.flatten().tolist()
    expected = []
    for e in examples:
        prompt = tokenizer(e.prompt(), add_special_tokens=False)["input_ids"]
        response = tokenizer(e.output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        expected += [(t, IGNORE) for t in prompt] + [(t, t) for t in response]
    expected = expected[: len(flat_ids)]
    assert list(zip(flat_ids, flat_labels, strict=True)) == expected
    assert ids.shape[1] == seq_len and len(expected) // seq_len == ids.shape[0]
    decoded = tokenizer.decode([t for t in flat_labels if t != IGNORE])
    assert "cat dog" in decoded and "Instruction" not in decoded


def _categories():
    return [
        Category(name, torch.arange(n * 4).view(n, 4) + 1000 * i, torch.zeros(n, 4, dtype=torch.long), None, None)
        for i, (name, n) in enumerate([("a", 3), ("b", 5)])
    ]


def test_stream_follows_weights_and_resumes_exactly():
    stream = MixedStream(_categories(), seed=3)
    _, _, picks = stream.next_batch([0.0, 1.0], 7)
    assert picks.tolist() == [1] * 7  # all from b, wrapping into a second epoch
    for _ in range(3):
        stream.next_batch([0.5, 0.5], 4)
    state = stream.state_dict()
    tail = [stream.next_batch([0.3, 0.7], 4)[0] for _ in range(5)]
    again = MixedStream(_categories(), seed=3)
    again.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(tail, [again.next_batch([0.3, 0.7], 4)[0] for _ in range(5)], strict=True))


def test_every_block_once_per_epoch():
    stream = MixedStream(_categories(), seed=0)
    ids, _, _ = stream.next_batch([0.0, 1.0], 5)
    assert sorted(ids[:, 0].tolist()) == [1000, 1004, 1008, 1012, 1016]


def test_shards_partition_the_global_batch():
    batch = torch.arange(12).view(6, 2)
    shards = [shard_rows(batch, r, 3) for r in range(3)]
    assert sorted(torch.cat(shards)[:, 0].tolist()) == batch[:, 0].tolist()
    assert all(len(s) == 2 for s in shards)
