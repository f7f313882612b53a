import json

import pytest
import torch
from tiny_models import with_random_lora

from lorashear import LorashearError, load
from lorashear.models import (
    BUILTIN_MODELS,
    count_parameters,
    is_pruned_folder,
    load_model,
    load_tokenizer,
    resolve_model,
)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(LorashearError, match="unknown model 'no-such-model'.*smollm2-135m"):
        resolve_model("no-such-model")


def test_missing_gguf_file(tmp_path):
    with pytest.raises(LorashearError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "absent.gguf"))


def test_folder_without_config(tmp_path):
    with pytest.raises(LorashearError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_existing_file_that_is_not_a_model(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(LorashearError, match="neither a model folder nor a .gguf"):
        resolve_model(str(f))


def test_hub_ids_are_passed_through_untouched():
    source = resolve_model("HuggingFaceTB/SmolLM2-135M")
    assert source.location == "HuggingFaceTB/SmolLM2-135M" and not source.is_local


def test_local_folder_loads_on_cpu_in_eval_mode(tiny_llama_dir):
    model = load_model(str(tiny_llama_dir), device="cpu")
    assert not model.training and next(model.parameters()).device.type == "cpu"
    tok = load_tokenizer(str(tiny_llama_dir))
    assert tok.pad_token is not None
    # the top-level API is the same loader
    assert count_parameters(load(str(tiny_llama_dir), device="cpu")) == count_parameters(model)


def test_count_parameters_counts_tied_embeddings_once(tiny_llama_dir):
    model = load_model(str(tiny_llama_dir), device="cpu")
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    naive = sum(t.numel() for t in model.state_dict().values())
    emb = model.get_input_embeddings().weight.numel()
    assert count_parameters(model) == naive - emb


def test_pruned_folder_detection(tmp_path, tiny_llama_dir):
    assert not is_pruned_folder(tiny_llama_dir)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "lorashear": {"layers": []}}))
    assert is_pruned_folder(tmp_path)


@pytest.mark.real
def test_default_model_says_paris():
    """Real smoke test: the embedded default model loads and knows the capital of France."""
    spec = "smollm2-135m"
    assert spec in BUILTIN_MODELS
    model, tok = load_model(spec, device="cpu"), load_tokenizer(spec)
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    completion = tok.decode(out[0, ids["input_ids"].shape[1] :])
    assert completion.startswith(" Paris"), completion
    assert 134_000_000 < count_parameters(model) < 135_000_000


def _adapter_folder(base_dir, out):
    """A peft LoRA adapter (non-zero B, so it matters) over the folder `base_dir`, saved to `out`."""
    torch.manual_seed(0)
    model = with_random_lora(load_model(str(base_dir), device="cpu"))
    model.save_pretrained(out)
    return model


def test_adapter_folder_loads_onto_its_base(tiny_llama_dir, tmp_path):
    """A peft adapter folder is a model argument: its base (any model argument) with the adapter applied."""
    adapted = _adapter_folder(tiny_llama_dir, tmp_path / "adapter")
    loaded = load_model(str(tmp_path / "adapter"), device="cpu")
    assert hasattr(loaded, "peft_config") and not loaded.training
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, adapted(ids).logits, atol=1e-5, rtol=0)
    assert len(load_tokenizer(str(tmp_path / "adapter"))) == len(load_tokenizer(str(tiny_llama_dir)))


def test_adapter_folder_with_a_missing_base_is_a_clear_error(tiny_llama_dir, tmp_path):
    _adapter_folder(tiny_llama_dir, tmp_path / "adapter")
    config = tmp_path / "adapter" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": str(tmp_path / "gone")}))
    with pytest.raises(LorashearError, match="adapter_config.json names base model"):
        load_model(str(tmp_path / "adapter"), device="cpu")


def test_builtin_model_is_fetched_on_first_use(monkeypatch, tmp_path):
    """A built-in name fetches its GGUF (a no-op once cached), then converts it; nothing else is downloaded."""
    from lorashear import assets, models

    fetched = []

    class FakeFile:
        def fetch(self, progress=print):
            fetched.append(True)
            return tmp_path / "m.gguf"

    monkeypatch.setitem(models.BUILTIN_MODELS, "fake-model", assets.BuiltinModel("fake-model", "fake", FakeFile(), "none"))
    monkeypatch.setattr(models, "gguf_to_folder", lambda gguf: tmp_path / f"{gguf.stem}-folder")
    source = resolve_model("fake-model")
    assert fetched == [True] and source.location == str(tmp_path / "m-folder") and source.is_local


def test_dtype_names_resolve_on_the_device():
    from lorashear.models import resolve_dtype

    assert resolve_dtype("auto", "cpu") == torch.float32  # a CPU keeps the figures as they were
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert resolve_dtype(torch.float32, "cpu") == torch.float32
    with pytest.raises(LorashearError, match="unknown dtype 'bf16'; choose from auto, float32, bfloat16, float16"):
        resolve_dtype("bf16", "cpu")


def test_a_half_dtype_the_device_cannot_run_is_one_clear_error(monkeypatch):
    import lorashear.models as models

    monkeypatch.setattr(models, "_computes_in", lambda dtype, device: False)
    with pytest.raises(LorashearError, match="cannot run a model in float16; use bfloat16 or float32"):
        models.resolve_dtype("float16", "cpu")


def test_models_load_in_the_dtype_asked_for(tiny_llama_dir):
    model = load_model(str(tiny_llama_dir), device="cpu", dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in load_model(str(tiny_llama_dir), device="cpu").parameters()} == {torch.float32}


def test_a_skeleton_has_every_shape_and_no_weights(tiny_llama_dir, monkeypatch):
    """load_skeleton reads the config only: parameters on the meta device, the loaded model's names and shapes."""
    import safetensors.torch

    from lorashear.models import load_skeleton

    def no_weights(*args, **kwargs):
        raise AssertionError("a skeleton read weights")

    monkeypatch.setattr(safetensors.torch, "load_file", no_weights)
    monkeypatch.setattr(safetensors, "safe_open", no_weights)
    skeleton = load_skeleton(str(tiny_llama_dir), dtype="bfloat16")
    monkeypatch.undo()
    loaded = load_model(str(tiny_llama_dir), device="cpu")
    assert {p.device.type for p in skeleton.parameters()} == {"meta"}
    assert {p.dtype for p in skeleton.parameters()} == {torch.bfloat16}
    assert {n: p.shape for n, p in skeleton.named_parameters()} == {n: p.shape for n, p in loaded.named_parameters()}


def test_a_cpu_load_leaves_no_weight_mapped_from_the_file(tiny_llama_dir):
    """Weights are read into memory of their own (pread), not left as views of the mapped safetensors file: a
    touched mapped page counts for as long as any tensor of the file lives, so replacing weights (compress,
    merges) would hold the old file pages beside the new weights."""
    from pathlib import Path

    model = load_model(str(tiny_llama_dir), device="cpu")
    mapped = [line.split()[0] for line in Path("/proc/self/maps").read_text().splitlines()
              if line.endswith(".safetensors") and str(tiny_llama_dir) in line]
    ranges = [tuple(int(x, 16) for x in span.split("-")) for span in mapped]
    assert not any(start <= p.data_ptr() < end for p in model.parameters() for start, end in ranges)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
