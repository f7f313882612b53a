"""A GGUF file opened in llama.cpp (through llama-cpp-python), with its weight repacking on or off.

llama.cpp repacks weights at load time into extra buffer types for the CPU's fastest kernels (AVX-512, AMX).
On an AMX Xeon that crashed it on a Q8_0 file of ours (README, known limitations); `repack=False` loads the
weights as written, what `--no-repack` does in llama.cpp's own tools. The binding has no keyword for it, so
the model parameters it starts from are patched for the one load.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

from lorashear.errors import LorashearError


def require_llama_cpp(purpose: str) -> ModuleType:
    """The llama_cpp module, or one clear error saying what needs it and how to install it."""
    try:
        import llama_cpp
    except ImportError as err:
        raise LorashearError(f"{purpose} needs llama-cpp-python: pip install 'lorashear[gguf]'") from err
    return llama_cpp


def open_gguf(path: str | Path, repack: bool = True, **kwargs: Any) -> Any:
    """`llama_cpp.Llama(path, **kwargs)`; `repack=False`: without llama.cpp's extra (repacked) buffer types."""
    llama_cpp = require_llama_cpp("running a GGUF file")
    if not Path(path).is_file():
        raise LorashearError(f"no GGUF file at {path}: write one with `lorashear export-gguf`")
    if repack:
        return llama_cpp.Llama(str(path), **kwargs)
    defaults = llama_cpp.llama_cpp.llama_model_default_params

    def without_repacking():
        params = defaults()
        params.use_extra_bufts = False
        return params

    with mock.patch.object(llama_cpp.llama_cpp, "llama_model_default_params", without_repacking):
        return llama_cpp.Llama(str(path), **kwargs)
