"""Deployment: run what we prune outside Python. `export_gguf` writes a llama.cpp GGUF file."""

from lorashear.deploy.gguf_export import DTYPES, QUANTS, export_gguf
from lorashear.deploy.gguf_layout import GGUFLayout, LayerShape, read_layout

__all__ = ["DTYPES", "QUANTS", "GGUFLayout", "LayerShape", "export_gguf", "read_layout"]
