"""Save a compressed model as a Hugging Face folder, and load such folders back.

Layers alike: a plain config of the original architecture (stock `from_pretrained`); added output
biases set the config's bias flags where it has them (llama's `attention_bias`, `mlp_bias`). Layers
that differ, or biases no flag creates: the original config plus the removed indices and added
biases under the `lorashear` key, and `modeling_lorashear.py` (auto_map), so stock transformers
loads it with `trust_remote_code=True`.
Every exported folder has a `lorashear` key in config.json: that is how to recognise one.

`norm_eps="stock"`: where only the shared `rms_norm_eps` keeps a uniform folder from being plain
(hidden channels removed from Qwen3/Gemma 3/OLMo2, whose per-head q/k norms share the hidden norms'
eps; OLMo2's q/k norms after head removal), every RMSNorm keeps the original eps instead of the
exact eps·d/d′, so the folder loads in any runtime. Each such norm's output is then scaled by
`stock_eps_scale` (≥ 1, close to 1 unless its input's mean square nears eps); pruning.json says so.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers.utils.hub import convert_file_size_to_int

from lorashear.compress.core import base_model_of, count_params
from lorashear.errors import LorashearError
from lorashear.graph.structures import Group, groups_from_json, groups_to_json
from lorashear.io import WEIGHTS_INDEX, write_safetensors
from lorashear.models import merge_lora as merge_lora_into
from lorashear.pruned import ADAPTER_DIR, REMOTE_FILE
from lorashear.pruned import modeling_lorashear as remote
from lorashear.pruned.modeling_lorashear import TensorEdit

MAX_SHARD_SIZE = "5GB"  # safetensors shards of every saved folder (transformers' own default is one 50 GB file)
PLAN_FILE = "pruning.json"
# pruning.json's `format`: 1 = `removed` holds one dict per group (`Group.to_dict`; folders written before the
# field existed have none and read as 1); 2 = `removed` holds compact records (`graph.groups_to_json`). The other
# keys are the same in both: params_before/after, plain, norm_eps, lora, then `prune_model`'s record (method,
# ratio, achieved_ratio, uniform, kinds, settings, knowledge). `read_pruning_record` reads every format.
PRUNING_FORMAT = 2
# Config flags that make stock transformers build projection biases (llama family).
BIAS_FLAGS = ("attention_bias", "mlp_bias")
NORM_EPS = ("exact", "stock")  # export's choices: remote code where eps differ, or the original eps everywhere


def saved_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """What a model's safetensors files hold, in order: its parameters (a tied one once, by its first name) and
    persistent buffers."""
    buffers = []
    for name, b in model.named_buffers():
        owner, _, leaf = name.rpartition(".")
        if leaf not in model.get_submodule(owner)._non_persistent_buffers_set:
            buffers.append((name, b))
    return [*model.named_parameters(), *buffers]


@dataclass
class FolderWeights:
    """The values of a compressed skeleton (`compress_skeleton`: meta device): the uncompressed model's safetensors
    folder, and what compression does to each tensor that changes (`TensorEdit`s by state_dict name)."""

    folder: Path
    edits: dict[str, TensorEdit]

    def save(self, model: nn.Module, out: Path, extras: dict[str, torch.Tensor]) -> None:
        """`model`'s tensors (and `extras`, zeros) as safetensors files in `out`, each read from the folder, edited
        and written in turn: one tensor is held at a time (each source file opened once)."""
        from safetensors import safe_open

        with contextlib.ExitStack() as stack:
            sources = [stack.enter_context(safe_open(str(file), framework="pt", device="cpu")) for file in self._files()]
            where = {name: handle for handle in sources for name in handle.keys()}
            tensors = dict(saved_tensors(model))
            missing = [name for name in tensors if name not in where]
            if missing:
                raise LorashearError(f"{self.folder} has no tensor {missing[0]!r} ({len(missing)} of the model's are "
                                     "missing); pass the uncompressed model's own folder")

            def tensor(name: str) -> torch.Tensor:
                if name in extras:
                    return torch.zeros(extras[name].shape, dtype=extras[name].dtype)
                t = where[name].get_tensor(name).to(tensors[name].dtype)
                edit = self.edits.get(name)
                return t if edit is None else edit.apply(t)

            entries = [(name, t.shape, t.dtype) for name, t in [*tensors.items(), *extras.items()]]
            write_safetensors(out, entries, tensor, convert_file_size_to_int(MAX_SHARD_SIZE))
        save_configs(model, out)

    def _files(self) -> list[Path]:
        """The folder's safetensors files (its index's, or model.safetensors)."""
        index = self.folder / WEIGHTS_INDEX
        if index.is_file():
            return sorted({self.folder / file for file in json.loads(index.read_text())["weight_map"].values()})
        single = self.folder / "model.safetensors"
        if not single.is_file():
            raise LorashearError(f"{self.folder} has no model.safetensors or {WEIGHTS_INDEX}; pass a folder written "
                                 "by save_pretrained")
        return [single]


def save_configs(model: nn.Module, folder: Path) -> None:
    """The model's config.json and generation_config.json (if it has one), as save_pretrained writes them beside
    the weights."""
    model.config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)


def stock_extras(model: nn.Module, config) -> dict[str, torch.Tensor] | None:
    """Zero biases that the stock class built from `config` has beyond `model`'s tensors, or None unless
    that class has exactly the model's other tensors, shapes, module types and norms."""
    try:
        # Rebuilt from its dict, as `from_pretrained` reads it: that runs the config's validation, which
        # setting pruned sizes on the live config skips (e.g. hidden size no longer a multiple of the heads).
        config = type(config).from_dict(config.to_dict())
        with torch.device("meta"):
            stock = type(model)(config)
    except Exception:  # the config cannot describe it
        return None
    state = model.state_dict()
    stock_state = stock.state_dict()
    if set(state) - set(stock_state):
        return None
    extras = {}
    for name, t in stock_state.items():
        weight = state.get(name.removesuffix(".bias") + ".weight")
        if name in state:
            if state[name].shape != t.shape:
                return None
        elif name.endswith(".bias") and weight is not None:
            extras[name] = torch.zeros(t.shape, dtype=weight.dtype, device=weight.device)
        else:
            return None
    stock_modules = dict(stock.named_modules())
    for name, module in model.named_modules():
        other = stock_modules.get(name)
        if other is None or type(other) is not type(module):
            return None
        attr = remote.norm_eps_attr(module)
        if attr and getattr(other, attr, None) != getattr(module, attr):
            return None
    return extras


def is_plain(model: nn.Module) -> bool:
    """Whether the stock class built from `model.config` has exactly the model's shapes and norms."""
    return stock_extras(model, model.config) == {}


def plain_layout(model: nn.Module, try_flags: bool) -> tuple[object, dict[str, torch.Tensor]] | None:
    """A config with which the stock class builds `model`, and the zero biases it adds; None if there is none.

    With `try_flags` (the model has added biases), the config's bias flags may be set: they also create
    the biases of sibling projections, which are saved as zeros.
    """
    flags = [f for f in BIAS_FLAGS if try_flags and getattr(model.config, f, None) is False]
    for k in range(len(flags) + 1):
        for chosen in itertools.combinations(flags, k):
            config = copy.deepcopy(model.config)
            for flag in chosen:
                setattr(config, flag, True)
            extras = stock_extras(model, config)
            if extras is not None:
                return config, extras
    return None


def stock_eps_scale(eps: float, ratio: float, mean_square: float) -> float:
    """Factor by which a norm that lost channels (d → d′, `ratio` = d/d′) scales its output when it keeps
    `eps` instead of eps·d/d′: sqrt((ms + eps)/(ms + eps·d′/d)), ms its input's mean square over the d
    original channels. In [1, sqrt(d/d′)]; at most 1 + eps·(1 − d′/d)/(2·ms)."""
    return math.sqrt((mean_square + eps) / (mean_square + eps / ratio))


def _rms_norms(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """RMSNorm modules with an eps attribute: name -> (module, attribute)."""
    return {name: (m, attr) for name, m in model.named_modules() if remote.is_rms_norm(m) and (attr := remote.norm_eps_attr(m))}


def _stock_eps_layout(model: nn.Module, info: dict, try_flags: bool) -> tuple[tuple, dict] | None:
    """`plain_layout` with every RMSNorm at the config's original eps, and the record of what that changes;
    None (the model untouched) if even that is not plain. The live model keeps its exact eps."""
    eps = info["original"].get("rms_norm_eps", getattr(model.config, "rms_norm_eps", None))
    if eps is None:
        return None
    norms = _rms_norms(model)
    changed = {name: getattr(m, attr) for name, (m, attr) in norms.items() if getattr(m, attr) != eps}
    live_eps = model.config.rms_norm_eps
    try:
        model.config.rms_norm_eps = eps
        for name in changed:
            module, attr = norms[name]
            setattr(module, attr, eps)
        layout = plain_layout(model, try_flags)
    finally:
        model.config.rms_norm_eps = live_eps
        for name, value in changed.items():
            module, attr = norms[name]
            setattr(module, attr, value)
    if layout is None:
        return None
    ratios = {name: value / eps for name, value in changed.items()}  # eps was scaled by d/d′
    worst = max(ratios.values(), default=1.0)
    record = {
        "mode": "stock",
        "rms_norm_eps": eps,
        "norms_changed": len(ratios),
        "max_channel_ratio": worst,  # the largest d/d′
        "bound": (f"each of these RMSNorms' outputs is scaled by sqrt((ms + eps)/(ms + eps·d′/d)) in "
                  f"[1, {math.sqrt(worst):.4f}], ms its input's mean square over the original channels; "
                  f"≤ 1 + {eps * (1 - 1 / worst) / 2:.3g}/ms"),
    }
    return layout, record


def export(
    model: nn.Module,
    tokenizer,
    out_dir: str | Path,
    removed: list[Group],
    params_before: int,
    merge_lora: bool = True,
    overwrite: bool = False,
    extra_files: dict[str, str | bytes] | None = None,
    record: dict | None = None,
    norm_eps: str = "exact",
    weights: FolderWeights | None = None,
) -> Path:
    """Write the compressed `model` (LoRA merged into it in place, no copy of the model; or kept as `adapter/`,
    which copies the model to unload it), its tokenizer and `extra_files`
    (relative path -> text or bytes) to `out_dir`, through a temporary folder renamed at the end; `record` (how the groups
    were chosen) goes into pruning.json. `norm_eps="stock"` trades the exact norm eps for a plain folder
    where that is all that prevents one (see the module's docstring). With `weights`, `model` is a compressed
    skeleton (`compress_skeleton`, no LoRA) and its values stream from `weights.folder`: the whole model is never
    in memory."""
    if norm_eps not in NORM_EPS:
        raise LorashearError(f"norm_eps must be one of {', '.join(NORM_EPS)}, got {norm_eps!r}")
    if weights is not None and hasattr(model, "get_base_model"):
        raise LorashearError("export with weights from a folder takes the compressed skeleton without LoRA")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise LorashearError(f"{out_dir} exists and is not empty; choose another folder or pass overwrite")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        peft = hasattr(model, "get_base_model")
        if peft and merge_lora:  # in place, no copy of the model: LoRA summed into W in float32, adapters dropped
            base = merge_lora_into(model)
        elif peft:  # the adapter kept beside the base: a copy to unload, so the caller's model keeps its adapter
            model.save_pretrained(tmp / ADAPTER_DIR)
            base = copy.deepcopy(model).unload()
        else:
            base = model
        info = dict(getattr(base.config, "lorashear", None) or {})
        if not info:
            raise LorashearError("this model was not compressed by lorashear.compress; nothing to export")
        base.config.lorashear = None
        layout = plain_layout(base, try_flags=bool(info.get("biases")))
        eps_record = {"mode": "exact"}
        if layout is None and norm_eps == "stock":
            layout, eps_record = _stock_eps_layout(base, info, bool(info.get("biases"))) or (None, eps_record)
        base.config.lorashear = info
        plain = layout is not None
        extras: dict[str, torch.Tensor] = {}
        if plain:
            config, extras = layout
            config.lorashear = {"version": 1, "plain": True}
        else:
            # The original architecture's sizes; the loader shrinks it by the recorded indices.
            config = copy.deepcopy(base.config)
            for key, value in info["original"].items():
                setattr(config, key, value)
            config.lorashear = {"version": 1, "plain": False, "removed": info["removed"]}
            if info.get("biases"):
                config.lorashear["biases"] = info["biases"]
            config.auto_map = {"AutoModelForCausalLM": f"{REMOTE_FILE.stem}.LorashearForCausalLM"}
            shutil.copy(REMOTE_FILE, tmp / REMOTE_FILE.name)
        # Saved with the config it ships: the pruned sizes may not validate (hidden size no longer a
        # multiple of the head count) and are only meant for the live model.
        pruned_config, base.config = base.config, config
        try:
            if weights is None:
                base.save_pretrained(tmp, state_dict={**base.state_dict(), **extras} if extras else None,
                                     max_shard_size=MAX_SHARD_SIZE)
            else:
                weights.save(base, tmp, extras)
        finally:
            base.config = pruned_config
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        plan = {
            "format": PRUNING_FORMAT,
            "params_before": int(params_before),
            "params_after": count_params(base) + sum(t.numel() for t in extras.values()),
            "plain": plain,
            "norm_eps": eps_record,
            "lora": "merged" if merge_lora or not peft else ADAPTER_DIR,
            **(record or {}),
            "removed": groups_to_json(removed),
        }
        (tmp / PLAN_FILE).write_text(json.dumps(plan))
        for name, content in (extra_files or {}).items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def read_pruning_record(folder: str | Path) -> dict:
    """A pruned folder's pruning.json, whatever format wrote it (`PRUNING_FORMAT`), its `removed` groups read back
    as `Group`s; one clear error for a folder without one or a format newer than this lorashear reads."""
    path = Path(folder) / PLAN_FILE
    if not path.is_file():
        raise LorashearError(f"{folder} has no {PLAN_FILE}; is it a folder written by `lorashear prune`?")
    record = json.loads(path.read_text())
    version = record.get("format", 1)
    if not isinstance(version, int) or not 1 <= version <= PRUNING_FORMAT:
        raise LorashearError(f"{path} has format {version!r}, newer than this lorashear reads (1-{PRUNING_FORMAT}); "
                             "upgrade lorashear")
    return {**record, "format": version, "removed": groups_from_json(record.get("removed", []))}


__all__ = ["export", "is_plain", "base_model_of", "read_pruning_record", "FolderWeights", "PRUNING_FORMAT"]
