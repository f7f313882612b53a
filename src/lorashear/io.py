"""Writing files so that nothing half-written looks finished: atomic text (a temporary file renamed into place), and
safetensors folders streamed a tensor at a time (each file's header first, from the shapes alone)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

SAFETENSORS_DTYPE = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
                     torch.int64: "I64", torch.int32: "I32", torch.bool: "BOOL", torch.uint8: "U8"}
WEIGHTS_INDEX = "model.safetensors.index.json"  # transformers' name for the index of a sharded folder

Entry = tuple[str, torch.Size, torch.dtype]  # a tensor's name, shape and dtype


def write_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to a temporary file next to `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)
    return path


def write_safetensors(folder: Path, entries: Sequence[Entry], tensor: Callable[[str], torch.Tensor],
                      max_shard_size: int, write: bool = True) -> None:
    """The tensors `entries` names as HF safetensors files in `folder` (model.safetensors, or numbered files of at most
    `max_shard_size` bytes each and their index, as transformers names them), `tensor(name)` called for each in file
    order and its bytes streamed into place: one tensor is held at a time. With `write=False` every `tensor` call still
    happens (a collective gather runs on every process) and nothing is written."""
    files = _layout(entries, max_shard_size)
    if write:
        folder.mkdir(parents=True, exist_ok=True)
    for file_name, file_entries in files:
        out = _start_file(folder / file_name, file_entries) if write else None
        try:
            for name, shape, dtype in file_entries:
                t = tensor(name)
                if out is None:
                    continue
                if t.shape != shape or t.dtype != dtype:
                    raise ValueError(f"{name}: got {tuple(t.shape)} {t.dtype}, the header says {tuple(shape)} {dtype}")
                out.write(t.to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        finally:
            if out is not None:
                out.close()
    if write and len(files) > 1:
        weight_map = {name: file_name for file_name, file_entries in files for name, _, _ in file_entries}
        total = sum(_nbytes(shape, dtype) for _, file_entries in files for _, shape, dtype in file_entries)
        (folder / WEIGHTS_INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                       indent=2, sort_keys=True))


def _nbytes(shape: torch.Size, dtype: torch.dtype) -> int:
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


def _layout(entries: Sequence[Entry], max_shard_size: int) -> list[tuple[str, list[Entry]]]:
    """Tensors into files of at most `max_shard_size` bytes (a larger tensor alone), named as transformers names
    them: model.safetensors, or model-0000i-of-0000n.safetensors."""
    groups: list[list[Entry]] = [[]]
    size = 0
    for entry in entries:
        n = _nbytes(entry[1], entry[2])
        if groups[-1] and size + n > max_shard_size:
            groups.append([])
            size = 0
        groups[-1].append(entry)
        size += n
    if len(groups) == 1:
        return [("model.safetensors", groups[0])]
    return [(f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors", g) for i, g in enumerate(groups)]


def _start_file(path: Path, entries: list[Entry]):
    """Open a safetensors file and write its header (8-byte little-endian length, JSON padded to 8 bytes); the
    tensors' bytes follow in `entries` order."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, dtype in entries:
        if dtype not in SAFETENSORS_DTYPE:
            raise ValueError(f"cannot write {name}: dtype {dtype} has no safetensors name here")
        n = _nbytes(shape, dtype)
        header[name] = {"dtype": SAFETENSORS_DTYPE[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    out = open(path, "wb")  # noqa: SIM115 (closed by write_safetensors once its tensors are written)
    out.write(len(text).to_bytes(8, "little"))
    out.write(text)
    return out
