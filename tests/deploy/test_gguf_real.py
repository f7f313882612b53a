"""The default model's export reproduces the GGUF file llama.cpp's own converter wrote (its packaged source)."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from lorashear.deploy import export_gguf
from lorashear.models import BUILTIN_MODELS, DEFAULT_MODEL


@pytest.mark.real
def test_default_model_export_equals_the_original_gguf(tmp_path):
    """Our HF folder is that file dequantized, so an f32 export must give its tensors back exactly, Q/K
    permutation included, with the same names, shapes and hyper-parameters."""
    original = gguf.GGUFReader(BUILTIN_MODELS[DEFAULT_MODEL].gguf.path())
    export_gguf(DEFAULT_MODEL, tmp_path / "m.gguf", dtype="f32")
    ours = gguf.GGUFReader(tmp_path / "m.gguf")
    theirs = {t.name: t for t in original.tensors}
    assert sorted(theirs) == sorted(t.name for t in ours.tensors)
    for t in ours.tensors:
        want = gguf.quants.dequantize(theirs[t.name].data, theirs[t.name].tensor_type)
        np.testing.assert_array_equal(np.asarray(t.data).reshape(want.shape), want, err_msg=t.name)
    for key in ("llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
                "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon", "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.eos_token_id", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"):
        assert ours.fields[key].contents() == original.fields[key].contents(), key
