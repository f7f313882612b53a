"""The pieces of sharded training that need no second process: row ranges, launch checks, the peft-equal LoRA
initialisation, the streamed safetensors writer, the allocator setting. Two processes: tests/recover/test_fsdp.py."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import init_empty_weights
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

from lorashear import distributed
from lorashear.errors import LorashearError
from lorashear.io import WEIGHTS_INDEX
from lorashear.models import load_skeleton
from lorashear.train import sharding
from lorashear.train.config import LoopConfig
from lorashear.train.lora import add_lora


def test_row_ranges_cover_every_row_once_as_fsdp_splits_them():
    for rows in (0, 1, 5, 8, 33):
        for world in (1, 2, 3, 4):
            ranges = [distributed.row_range(rows, r, world) for r in range(world)]
            assert [i for a, b in ranges for i in range(a, b)] == list(range(rows))
            chunk = -(-rows // world)
            assert all(b - a <= chunk for a, b in ranges)
    assert distributed.row_range(5, 1, 2) == (3, 5)


def test_a_plain_tensor_is_its_own_rows_from_zero():
    t = torch.nn.Parameter(torch.arange(6.0).reshape(3, 2))
    local, start = distributed.local_rows(t)
    assert start == 0 and local.data_ptr() == t.data_ptr() and not local.requires_grad
    local[1] = 0  # writes reach the parameter
    assert t[1].tolist() == [0.0, 0.0] and distributed.full_tensor(t) is t
    assert not distributed.is_dtensor(t)
    rows = torch.tensor([2, 0])
    assert distributed.local_index(t, (rows,))[1][0] is rows  # unsharded: the index as it is


def test_deepspeed_and_fsdp1_are_refused_naming_what_to_use(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(LorashearError, match="FSDP2.*fsdp.yaml"):
        sharding.check_launch()
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(LorashearError, match="fsdp_version: 2"):
        sharding.check_launch()
    monkeypatch.setenv("FSDP_VERSION", "2")
    sharding.check_launch()


def test_take_over_hides_fsdp_from_accelerate_and_keeps_it(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    monkeypatch.setenv("LORASHEAR_FSDP", "")  # recorded: the flag take_over sets is undone after the test
    assert sharding.take_over()
    assert sharding.requested() and __import__("os").environ["ACCELERATE_USE_FSDP"] == "false"


def test_fixed_mmap_threshold_is_set_on_glibc():
    assert sharding.fixed_mmap_threshold()


def _tiny_llama(folder, tied=True):
    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    return model


def test_lora_drawn_on_the_skeleton_equals_peft_on_the_real_model(tmp_path):
    _tiny_llama(tmp_path / "m")
    config = LoopConfig(lora_r=4, lora_targets="all-linear")
    torch.manual_seed(7)
    real = add_lora(AutoModelForCausalLM.from_pretrained(tmp_path / "m"), config)
    after_real = torch.rand(1)
    torch.manual_seed(7)
    with init_empty_weights(include_buffers=False):  # as load_sharded attaches it: nothing drawn
        skeleton = add_lora(load_skeleton(str(tmp_path / "m")), config)
    skeleton.to_empty(device="cpu")
    sharding.init_lora_like_peft(skeleton)
    lora = {n: p for n, p in real.named_parameters() if ".lora_" in n}
    drawn = {n: p for n, p in skeleton.named_parameters() if ".lora_" in n}
    assert lora.keys() == drawn.keys() and len(lora) == 2 * 7 * 2
    assert all(torch.equal(lora[n], drawn[n]) for n in lora)
    assert torch.equal(torch.rand(1), after_real)  # as many draws as peft's: what follows is the same too


def test_streamed_safetensors_load_as_the_model_saved_them(tmp_path):
    model = _tiny_llama(tmp_path / "m")
    entries = sum(p.numel() * 4 for p in model.parameters())
    sharding.save_pretrained(model, tmp_path / "out", is_main=True, max_shard_size=entries)
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "config.json").is_file()
    ours, theirs = load_file(tmp_path / "out" / "model.safetensors"), load_file(tmp_path / "m" / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

    (tmp_path / "split").mkdir()
    sharding.save_pretrained(model.to(torch.bfloat16), tmp_path / "split", is_main=True,
                             max_shard_size=entries // 5)
    index = json.loads((tmp_path / "split" / WEIGHTS_INDEX).read_text())
    files = sorted(p.name for p in (tmp_path / "split").glob("*.safetensors"))
    assert len(files) > 1 and set(index["weight_map"].values()) == set(files)
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "split", dtype=torch.bfloat16)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values(), strict=True))


def test_a_model_without_decoder_layer_classes_is_refused():
    with pytest.raises(LorashearError, match="_no_split_modules"):
        sharding.decoder_layers(torch.nn.Sequential(torch.nn.Linear(2, 2)))
