"""Deployment: run what we prune outside Python. `export_gguf` writes a llama.cpp GGUF file,
`open_gguf` runs one in llama.cpp (its weight repacking on or off)."""

from lorashear.deploy.gguf_export import DTYPES, QUANTS, export_gguf
from lorashear.deploy.gguf_layout import GGUFLayout, LayerShape, read_layout
from lorashear.deploy.gguf_run import open_gguf

__all__ = ["DTYPES", "QUANTS", "GGUFLayout", "LayerShape", "export_gguf", "open_gguf", "read_layout"]
