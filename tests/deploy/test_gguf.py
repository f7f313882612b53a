"""GGUF export: llama.cpp itself loads every exported file and computes the HF folder's logits and greedy tokens."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import pytest
import torch
from tiny_models import single_thread, tiny_model  # noqa: F401

from lorashear.cli import main
from lorashear.compress import add_output_bias, compress, count_params, export
from lorashear.deploy import export_gguf, open_gguf
from lorashear.errors import LorashearError
from lorashear.graph import ATTENTION_BLOCK, GROUP_KINDS, MLP_BLOCK, build_graph
from lorashear.models import load_model, load_tokenizer
from lorashear.prune import random_plan

TEXT = "Once upon a time, a little girl named Lily found a big red ball in the park."
NEW_TOKENS = 8


@pytest.fixture(scope="module")
def llama_cpp():
    return pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed: pip install 'lorashear[gguf]' (make test installs it)"
    )


def blocks(kind: str, layers: tuple[int, ...]) -> Callable:
    return lambda graph: [g for g in graph.of_kind(kind) if g.layer in layers]


def random_groups(ratio: float, kinds: list[str], uniform: bool) -> Callable:
    return lambda graph: random_plan(graph, ratio, kinds, uniform=uniform, seed=3).groups


def both(*pickers: Callable) -> Callable:
    return lambda graph: [g for pick in pickers for g in pick(graph)]


def with_output_biases(model) -> None:
    """FLAP's compensation: random output biases on every attention output and MLP down projection."""
    names = [n for n, _ in model.named_modules() if n.endswith(("o_proj", "down_proj"))]
    add_output_bias(model, names)
    with torch.no_grad():
        for name in names:
            model.get_submodule(name).bias.normal_(0, 0.1)


@dataclass(frozen=True)
class Case:
    arch: str  # the tiny source model's
    pick: Callable | None  # graph -> groups to remove; None: the dense folder itself
    expected: str  # GGUF architecture
    biases: bool = False  # add FLAP-like output biases before compressing
    config: dict | None = None  # a source model of its own, with these config settings


LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
LINEAR_ROPE = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}


CASES = {
    "llama-dense": Case("llama", None, "llama"),
    "llama-uniform": Case("llama", random_groups(0.3, ["kv_group", "mlp_channel"], True), "llama"),
    "llama-uniform-hidden": Case("llama", random_groups(0.3, ["kv_group", "mlp_channel", "hidden_channel"], True),
                                 "llama"),
    "llama-non-uniform": Case("llama", random_groups(0.3, ["kv_group", "mlp_channel"], False), "deci"),
    # Attention kept, MLP gone: llama.cpp would skip the layer's attention without the 1-wide zero MLP.
    "llama-no-mlp": Case("llama", both(blocks(MLP_BLOCK, (1, 3)), random_groups(0.2, ["mlp_channel"], False)),
                         "deci"),
    # Layer 0 without heads (llama.cpp reads the head size there) and a middle layer without heads.
    "llama-no-heads": Case("llama", blocks(ATTENTION_BLOCK, (0, 2)), "deci"),
    "llama-no-layer": Case("llama", both(blocks(ATTENTION_BLOCK, (1,)), blocks(MLP_BLOCK, (1,))), "deci"),
    "llama-non-uniform-biases": Case("llama", random_groups(0.3, ["kv_group", "mlp_channel"], False), "deci",
                                     biases=True),
    # RoPE scaling as llama.cpp's rope_freqs (llama3 scales some frequencies, linear all).
    "llama-rope-llama3": Case("llama", random_groups(0.3, ["kv_group", "mlp_channel"], False), "deci",
                              config={"rope_parameters": LLAMA3_ROPE}),
    "llama-rope-linear": Case("llama", None, "llama", config={"rope_parameters": LINEAR_ROPE}),
    "qwen2-dense": Case("qwen2", None, "qwen2"),
    # llama.cpp's qwen2 loader wants query width == hidden size, and has no output biases: deci takes both.
    "qwen2-uniform-heads": Case("qwen2", random_groups(0.3, ["kv_group", "mlp_channel"], True), "deci"),
    "qwen2-uniform-biases": Case("qwen2", random_groups(0.2, ["mlp_channel"], True), "deci", biases=True),
    "qwen2-non-uniform": Case("qwen2", random_groups(0.3, ["kv_group", "mlp_channel"], False), "deci"),
}


@pytest.fixture(scope="module")
def folders(small_vocab_dirs, small_tokenizer, tmp_path_factory) -> dict[str, Path]:
    """Each case's HF folder: the tiny 4-layer model, pruned by lorashear's compress and export where asked."""
    out, graphs = {}, {}
    for name, case in CASES.items():
        source = str(small_vocab_dirs[case.arch])
        if case.config:
            source = str(tmp_path_factory.mktemp(name) / "dense")
            tiny_model(case.arch, vocab_size=len(small_tokenizer) + 20, num_hidden_layers=4,
                       max_position_embeddings=512, **case.config).save_pretrained(source)
            small_tokenizer.save_pretrained(source)
        if case.pick is None:
            out[name] = Path(source)
            continue
        model, tokenizer = load_model(source, device="cpu"), load_tokenizer(source)
        if case.arch not in graphs:  # groups name parameters, so one graph serves every model of an architecture
            graphs[case.arch] = build_graph(model, kinds=GROUP_KINDS)
        groups = case.pick(graphs[case.arch])
        before = count_params(model)
        if case.biases:
            with_output_biases(model)
        out[name] = export(compress(model, groups), tokenizer, tmp_path_factory.mktemp(name) / "pruned", groups, before)
    return out


def llama_cpp_model(llama_cpp, path: Path):
    """The file as llama.cpp runs it: every position's logits, f32 KV cache, one thread; weights not repacked
    (repacked AMX weights crashed llama.cpp on a pruned Q8_0 file: README, known limitations)."""
    return open_gguf(path, repack=False, n_ctx=128, logits_all=True, type_k=0, type_v=0, n_threads=1,
                     verbose=False, seed=0)


def greedy_llama_cpp(llm, ids: list[int], n: int) -> list[int]:
    """Greedy decoding one token at a time through llama.cpp's KV cache."""
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(n):
        out.append(int(llm.scores[llm.n_tokens - 1].argmax()))
        llm.eval([out[-1]])
    return out


@torch.no_grad()
def greedy_hf(model, ids: list[int], n: int) -> list[int]:
    """Greedy decoding one token at a time through the HF model's KV cache (no EOS stop: n tokens)."""
    out = model(torch.tensor([ids]), use_cache=True)
    tokens = []
    for _ in range(n):
        tokens.append(int(out.logits[0, -1].argmax()))
        out = model(torch.tensor([tokens[-1:]]), cache=out.cache, use_cache=True)
    return tokens


@pytest.mark.parametrize("case", list(CASES))
def test_llama_cpp_runs_the_export_exactly(case, folders, llama_cpp, tmp_path):
    folder = folders[case]
    out = tmp_path / "model.gguf"
    layout = export_gguf(str(folder), out, dtype="f32")
    assert layout.arch == CASES[case].expected
    assert out.is_file() and [p.name for p in tmp_path.iterdir()] == ["model.gguf"]  # temp file renamed

    hf, tokenizer = load_model(str(folder), device="cpu"), load_tokenizer(str(folder))
    llm = llama_cpp_model(llama_cpp, out)
    ids = tokenizer(TEXT, add_special_tokens=False).input_ids
    assert llm.tokenize(TEXT.encode(), add_bos=False) == ids  # the tokenizer metadata splits text like HF

    llm.eval(ids)
    got = torch.from_numpy(llm.scores[: len(ids)].copy())
    with torch.no_grad():
        want = hf(torch.tensor([ids])).logits[0]
    assert (got - want).abs().max().item() <= 1e-4

    assert greedy_llama_cpp(llm, ids, NEW_TOKENS) == greedy_hf(hf, ids, NEW_TOKENS)


def read_fields(path: Path) -> dict:
    reader = gguf.GGUFReader(path)
    return {name: field.contents() for name, field in reader.fields.items() if not name.startswith("tokenizer.")}


def test_deci_metadata_declares_per_layer_sizes(folders, tmp_path):
    """Removed MLPs are written 1 wide, a headless layer 0 with one zero head, other headless layers with none."""
    out = tmp_path / "m.gguf"
    export_gguf(str(folders["llama-no-heads"]), out, dtype="f32")
    fields = read_fields(out)
    assert fields["general.architecture"] == "deci"
    assert fields["deci.attention.head_count"] == [1, 4, 0, 4]
    assert fields["deci.attention.head_count_kv"] == [1, 2, 0, 2]
    assert fields["deci.attention.key_length"] == fields["deci.rope.dimension_count"] == 16
    export_gguf(str(folders["llama-no-mlp"]), out, dtype="f32")
    assert read_fields(out)["deci.feed_forward_length"][1::2] == [1, 1]


def relative_logit_error(llama_cpp, path: Path, folder: Path) -> float:
    """Largest |llama.cpp − HF| logit over the text, relative to the largest HF logit."""
    hf, tokenizer = load_model(str(folder), device="cpu"), load_tokenizer(str(folder))
    ids = tokenizer(TEXT, add_special_tokens=False).input_ids
    llm = llama_cpp_model(llama_cpp, path)
    llm.eval(ids)
    with torch.no_grad():
        want = hf(torch.tensor([ids])).logits[0]
    got = torch.from_numpy(llm.scores[: len(ids)].copy())
    return ((got - want).abs().max() / want.abs().max()).item()


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_half_precision_files_are_close(folders, llama_cpp, tmp_path, dtype):
    out = tmp_path / "m.gguf"
    export_gguf(str(folders["llama-non-uniform"]), out, dtype=dtype)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors}
    assert types["blk.0.attn_q.weight"] == dtype.upper() and types["blk.0.attn_norm.weight"] == "F32"
    assert relative_logit_error(llama_cpp, out, folders["llama-non-uniform"]) <= 0.02


def test_quantized_file_is_written_by_llama_cpp(folders, llama_cpp, tmp_path):
    """llama.cpp's quantizer: widths it cannot block (pruned MLPs) fall back to another type, the rest is Q8_0."""
    out = tmp_path / "q.gguf"
    export_gguf(str(folders["llama-no-mlp"]), out, dtype="f32", quant="q8_0")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors}
    assert types["token_embd.weight"] == types["blk.0.attn_q.weight"] == "Q8_0"
    assert [p.name for p in tmp_path.iterdir()] == ["q.gguf"]
    assert relative_logit_error(llama_cpp, out, folders["llama-no-mlp"]) <= 0.05


def test_open_gguf_turns_llama_cpps_weight_repacking_off_for_that_load_only(folders, llama_cpp, tmp_path, monkeypatch):
    """repack=False loads without llama.cpp's extra (repacked) buffer types, and the next load has them again;
    a missing file or a missing binding is one clear error."""
    out = tmp_path / "m.gguf"
    export_gguf(str(folders["llama-uniform"]), out, dtype="f32")
    assert open_gguf(out, repack=False, n_ctx=32, verbose=False).model_params.use_extra_bufts is False
    assert open_gguf(out, n_ctx=32, verbose=False).model_params.use_extra_bufts is True
    with pytest.raises(LorashearError, match="no GGUF file at .*none.gguf.*export-gguf"):
        open_gguf(tmp_path / "none.gguf")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if llama-cpp-python were not installed
    with pytest.raises(LorashearError, match="running a GGUF file needs llama-cpp-python"):
        open_gguf(out)


def test_other_architectures_are_refused_by_name(tmp_path):
    folder = tmp_path / "gpt2"
    tiny_model("gpt2").save_pretrained(folder)
    with pytest.raises(LorashearError, match="supports the llama and qwen2 architectures.*'gpt2'"):
        export_gguf(str(folder), tmp_path / "x.gguf")
    assert not any(p.suffix == ".gguf" for p in tmp_path.iterdir())


def test_cli_writes_the_file_and_refuses_bad_input(folders, tmp_path, capsys):
    out = tmp_path / "cli.gguf"
    assert main(["export-gguf", str(folders["llama-uniform"]), "-o", str(out), "--dtype", "f32"]) == 0
    assert read_fields(out)["general.architecture"] == "llama"
    assert "multiple of" not in capsys.readouterr().out  # widths a multiple of 64: no note
    assert main(["export-gguf", str(folders["llama-non-uniform"]), "-o", str(out), "--dtype", "f32"]) == 0
    assert "not a multiple of 64" in capsys.readouterr().out  # per-layer widths that llama.cpp runs slowly
    assert main(["export-gguf", str(folders["llama-uniform"]), "-o", str(out), "--quant", "q9_9"]) == 2
    assert "unknown quantization 'q9_9'" in capsys.readouterr().err
