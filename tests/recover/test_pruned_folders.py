"""Recovery of folders written by `lorashear prune`: plain (uniform) and remote-code (per-layer shapes).

OUT must reload the way the pruned folder did, keep its shapes, and compute what the trained
model computed in memory.
"""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from recover_material import tiny_config
from tiny_models import with_random_lora
from transformers import AutoModelForCausalLM

from lorashear.cli import main
from lorashear.models import load_model
from lorashear.recover import recipe, recover

IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 8, 61, 77, 12], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])


def _logits(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _shapes(model) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


@pytest.fixture(scope="module")
def pruned_folders(material, tmp_path_factory) -> dict[str, str]:
    """The tiny dense model pruned 30% at random, once with --uniform (plain folder), once without."""
    root = tmp_path_factory.mktemp("pruned")
    folders = {}
    for kind, extra in (("plain", ["--uniform"]), ("remote", [])):
        out = root / kind
        assert main(["prune", material["dense"], "--method", "random", "--ratio", "0.3", *extra, "-o", str(out)]) == 0
        folders[kind] = str(out)
    return folders


@pytest.mark.parametrize("kind", ["plain", "remote"])
def test_recovered_pruned_folder_reloads_with_its_shapes_and_outputs(material, pruned_folders, tmp_path, monkeypatch,
                                                                     kind):
    pruned = load_model(pruned_folders[kind], device="cpu")
    mlp_widths = {layer.mlp.up_proj.weight.shape[0] for layer in pruned.model.layers}
    assert (len(mlp_widths) == 1) == (kind == "plain")  # the remote folder really has per-layer shapes

    trained = {}
    save_merged = recipe.save_merged

    def capture(accelerator, model, *args, **kwargs):
        peft_model = copy.deepcopy(accelerator.unwrap_model(model))
        trained["lora"] = _logits(peft_model)
        trained["merged"] = _logits(peft_model.merge_and_unload())
        return save_merged(accelerator, model, *args, **kwargs)

    monkeypatch.setattr(recipe, "save_merged", capture)
    out = tmp_path / "recovered"
    result = recover(tiny_config(material, out, pruned=pruned_folders[kind], tokens=256, kd_weight=0.5,
                                 checkpoint_every=0))
    assert result.finished and result.steps == 4

    recovered = load_model(str(out), device="cpu")
    assert _shapes(recovered) == _shapes(pruned)
    assert not any("lora" in name for name in _shapes(recovered))
    assert any(not torch.equal(a, b) for a, b in zip(recovered.parameters(), pruned.parameters(), strict=True))
    logits = _logits(recovered)
    torch.testing.assert_close(logits, trained["merged"], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, trained["lora"], atol=1e-5, rtol=0)

    # Stock transformers: a plain folder as is, a remote-code one through its shipped modeling file.
    stock = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=kind == "remote")
    assert _shapes(stock) == _shapes(pruned)
    torch.testing.assert_close(_logits(stock), logits, atol=1e-6, rtol=0)


def test_an_adapter_kept_by_prune_is_merged_before_recovery(material, pruned_folders, tmp_path):
    """`lorashear prune --lora` folders carry adapter/; recovery starts from pruned weights + that adapter."""
    folder = tmp_path / "with_adapter"
    shutil.copytree(pruned_folders["plain"], folder)
    torch.manual_seed(0)
    adapted = with_random_lora(load_model(str(folder), device="cpu"))  # a trained-looking adapter, not the zero init
    adapted.save_pretrained(folder / "adapter")
    plan = json.loads((folder / "pruning.json").read_text())
    (folder / "pruning.json").write_text(json.dumps({**plan, "lora": "adapter"}))  # as `prune --lora` writes it
    expected = _logits(load_model(str(folder), device="cpu"))  # load_model applies the adapter
    assert not torch.allclose(expected, _logits(load_model(pruned_folders["plain"], device="cpu")), atol=1e-3)

    out = tmp_path / "recovered"
    recover(tiny_config(material, out, pruned=str(folder), tokens=128, lr=1e-12, mix="uniform", checkpoint_every=0))
    recovered = load_model(str(out), device="cpu")
    assert not (out / "adapter").exists() and not any("lora" in n for n in _shapes(recovered))
    assert json.loads((out / "pruning.json").read_text())["lora"] == "merged"  # says what the folder holds
    torch.testing.assert_close(_logits(recovered), expected, atol=1e-4, rtol=0)  # lr ~ 0: the adapted model
