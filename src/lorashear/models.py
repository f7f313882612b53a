"""Models: resolve a model argument to a loadable HF folder, and load it.

A model argument is one of: a built-in name (`smollm2-135m`, `gemma3-270m`, `qwen2.5-coder-0.5b`:
`lorashear.assets.MODELS`; fetched on first use), a local HF folder (pruned
lorashear folders included), a peft LoRA adapter folder (loaded onto the base model its
adapter_config.json names, itself any model argument), a local `.gguf` file, or a hub id
(`org/name`, for real users).
GGUF files are converted once into a safetensors HF folder in the cache, so later loads take
about a second.
"""

from __future__ import annotations

import gc
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from lorashear.assets import MODELS, cache_dir
from lorashear.errors import LorashearError
from lorashear.pruned import is_pruned_folder, load_pruned, pruned_skeleton

BUILTIN_MODELS = MODELS  # built-in name -> BuiltinModel (its GGUF file and where it comes from)
DEFAULT_MODEL = "smollm2-135m"
ADAPTER_CONFIG = "adapter_config.json"  # what makes a folder a peft adapter
# The weights' dtype of every stage: `auto` = bfloat16 on a CUDA device that supports it, float32 elsewhere.
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelSource:
    """Where a model argument points: a local HF folder, or a hub id (plus a LoRA adapter folder, if any)."""

    spec: str
    location: str  # folder path, or the hub id (of the base model, for an adapter)
    is_local: bool
    adapter: str | None = None  # a peft adapter folder to apply on top of `location`


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device | None = None) -> torch.dtype:
    """The torch dtype a `--dtype` name means on `device` (default: CUDA if present); one clear error for a name
    we do not know or a half-precision dtype the device cannot compute in."""
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        raise LorashearError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    device = torch.device(device) if device is not None else default_device()
    if dtype == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    resolved = getattr(torch, dtype)
    if resolved != torch.float32 and not _computes_in(resolved, device):
        other = "bfloat16 or float32" if dtype == "float16" else "float32"
        raise LorashearError(f"--dtype {dtype}: this {device.type} device cannot run a model in {dtype}; use {other}")
    return resolved


def _computes_in(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the ops a decoder needs (matmul, softmax, normalisation, SiLU) run in `dtype` on `device`."""
    try:
        x = torch.ones(2, 4, dtype=dtype, device=device)
        y = torch.nn.functional.silu(x @ x.T).softmax(-1)
        torch.nn.functional.layer_norm(y, (2,)).sum().item()
        return True
    except (RuntimeError, TypeError):
        return False


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.bfloat16` -> "bfloat16" (as run.json, the report and config.json's `dtype` write it)."""
    return str(dtype).removeprefix("torch.")


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~")) and not spec.endswith(".gguf")


def resolve_model(spec: str) -> ModelSource:
    """Map a model argument to a loadable location, converting GGUF files on first use."""
    if spec in BUILTIN_MODELS:
        gguf = BUILTIN_MODELS[spec].gguf.fetch()
        return ModelSource(spec, str(gguf_to_folder(gguf)), True)
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file():
            return _resolve_adapter(spec, path)
        if not (path / "config.json").is_file():
            raise LorashearError(f"{spec} is a folder but not a Hugging Face model (no config.json)")
        return ModelSource(spec, str(path), True)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise LorashearError(f"GGUF file not found: {spec}")
        return ModelSource(spec, str(gguf_to_folder(path)), True)
    if path.exists():
        raise LorashearError(f"{spec} is neither a model folder nor a .gguf file")
    if _looks_like_hub_id(spec):
        return ModelSource(spec, spec, False)
    names = ", ".join(BUILTIN_MODELS)
    raise LorashearError(
        f"unknown model '{spec}': not a built-in name ({names}), an existing folder or .gguf file, "
        "or a hub id of the form org/name"
    )


def _resolve_adapter(spec: str, folder: Path) -> ModelSource:
    """A peft adapter folder: its base model (resolved like any model argument) plus the adapter."""
    base = json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base:
        raise LorashearError(f"{spec}: {ADAPTER_CONFIG} names no base model (base_model_name_or_path)")
    try:
        source = resolve_model(base)
    except LorashearError as err:
        raise LorashearError(
            f"{spec}: {ADAPTER_CONFIG} names base model '{base}', which cannot be found ({err}); "
            "edit base_model_name_or_path to point at it"
        ) from err
    return ModelSource(spec, source.location, source.is_local, adapter=str(folder))


def gguf_to_folder(gguf: Path) -> Path:
    """Convert a GGUF file to a safetensors HF folder in the cache (once) and return the folder.

    transformers dequantizes GGUF weights on load but refuses to save such a model, so we
    rebuild the architecture from a clean config and copy the weights over.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = gguf.resolve()
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    folder = cache_dir() / "models" / f"{gguf.stem}-{key}"
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    print(f"converting {gguf.name} to a safetensors folder (once; cached in {folder}) ...", flush=True)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(loaded.state_dict())
    if loaded.generation_config is not None:
        clean.generation_config = loaded.generation_config
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        staging = Path(tmp) / "model"
        clean.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "lorashear_source.json").write_text(json.dumps({"gguf": str(gguf)}))
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    return folder


PLACEMENTS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's device_map strategies


@dataclass(frozen=True)
class Placement:
    """A model spread over the devices by accelerate's big-model inference (`from_pretrained(device_map=...)`), for
    a forward-only stage whose model does not fit one device: `device_map` one of `PLACEMENTS`, `max_memory` per
    device (GPU index, "cpu" or "disk" -> "20GiB"), layers beyond it offloaded (weights read in at each forward; to
    `offload_folder` for "disk")."""

    device_map: str = "auto"
    max_memory: dict | None = None
    offload_folder: str | None = None

    def __post_init__(self) -> None:
        if self.device_map not in PLACEMENTS:
            raise LorashearError(f"--device-map must be one of {', '.join(PLACEMENTS)}, got {self.device_map!r}")

    @classmethod
    def parse_max_memory(cls, text: str) -> dict:
        """`--max-memory 0=20GiB,1=20GiB,cpu=60GiB` -> {0: "20GiB", 1: "20GiB", "cpu": "60GiB"}."""
        limits: dict = {}
        for item in (t.strip() for t in text.split(",") if t.strip()):
            device, sep, size = item.partition("=")
            if not sep or not size.strip() or not (device.strip().isdigit() or device.strip() in ("cpu", "disk")):
                raise LorashearError(f"--max-memory takes DEVICE=SIZE items separated by commas (DEVICE a GPU index, "
                                     f"cpu or disk; e.g. 0=20GiB,cpu=60GiB), got {item!r}")
            device = device.strip()
            limits[int(device) if device.isdigit() else device] = size.strip()
        return limits

    def load_kwargs(self) -> dict:
        return {"device_map": self.device_map, "max_memory": self.max_memory, "offload_folder": self.offload_folder}


def load_model(spec: str, device: str | torch.device | None = None, dtype: str | torch.dtype = "auto",
               placement: Placement | None = None):
    """Load a causal LM from any model argument, in eval mode, on `device` (default: CUDA if present), with its
    weights in `dtype` (a `DTYPES` name or a torch dtype; `auto`: bfloat16 on a CUDA device that supports it, else
    float32); or spread over the devices as `placement` says (no `device` then)."""
    from transformers import AutoModelForCausalLM

    if placement is not None and device is not None:
        raise LorashearError(f"give a device ({device}) or a placement over the devices (--device-map), not both")
    device = torch.device(device) if device is not None else default_device()
    dtype = resolve_dtype(dtype, device)
    source = resolve_model(spec)
    load_kwargs = placement.load_kwargs() if placement is not None else {}
    try:
        if source.is_local and is_pruned_folder(source.location):
            model = load_pruned(source.location, dtype=dtype, **load_kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype, **load_kwargs)
        if source.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, source.adapter)
        elif device.type == "cpu" and source.is_local:
            read_into_memory(model, Path(source.location))
    except (OSError, ValueError) as err:
        raise LorashearError(f"could not load model '{spec}': {err}") from err
    return model.eval() if placement is not None else model.to(device).eval()


def load_to_edit(spec: str, dtype: str | torch.dtype, placement: Placement | None, stage: str) -> tuple:
    """(the model, the model to trace its graph from) for a stage that reads and edits the weights (`stage`, named in
    the error): loaded on the default device, or spread as `placement` says with every weight on a device
    (`check_in_memory`) and traced from its skeleton (the same names and shapes, no dispatch hooks in the trace)."""
    model = load_model(spec, dtype=dtype, placement=placement)
    if placement is None:
        return model, model
    check_in_memory(model, stage)
    return model, load_skeleton(spec, dtype)


def input_device(model: torch.nn.Module) -> torch.device:
    """Where a model's inputs go: its parameters' device, or for a model spread over devices (`Placement`) the first
    accelerator its layers run on (offloaded layers run there too), else the CPU."""
    spread = getattr(model, "hf_device_map", None)
    if spread:
        return next((torch.device(d) for d in spread.values() if d not in ("cpu", "disk")), torch.device("cpu"))
    return next(model.parameters()).device


def check_in_memory(model: torch.nn.Module, stage: str) -> None:
    """Refuse a model some of whose weights are offloaded (read in at each forward, meta in the module): `stage`
    reads or edits the weights themselves."""
    offloaded = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    if offloaded:
        raise LorashearError(f"{stage} reads and edits the weights, but {len(offloaded)} of the model's are offloaded "
                             f"(e.g. {offloaded[0]}): give --max-memory room for every layer on the devices (GPUs, or "
                             "the CPU without GPUs), or use more devices")


SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def read_into_memory(model: torch.nn.Module, folder: Path) -> int:
    """Give the parameters that are views of the memory-mapped checkpoint (transformers maps safetensors files
    and keeps views where no dtype conversion was needed) memory of their own, read with pread, one tensor at a
    time; returns how many. Once no view is left the file is unmapped. Why: a mapped page, once touched, counts
    in the process's memory for as long as any tensor of the file lives, so a stage that replaces weights
    (compress, merges) would hold the old file pages beside the new weights: 1.8x the weights at 20%."""
    from safetensors import safe_open

    params = dict(model.named_parameters())
    replaced = 0
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt", device="cpu", backend="pread") as f:
            for name in f.keys():
                param, stored = params.get(name), f.get_slice(name)
                if (param is None or param.device.type != "cpu" or list(param.shape) != stored.get_shape()
                        or SAFETENSORS_DTYPES.get(stored.get_dtype()) != param.dtype):
                    continue  # not a view of the file (converted on load), or not this model's
                param.data = f.get_tensor(name)
                replaced += 1
    return replaced


def load_skeleton(spec: str, dtype: str | torch.dtype = "auto", lora: bool = False):
    """The model of `spec` with its parameters on the meta device: every shape and name, no weights read or
    allocated (the graph is traced with fake tensors, so discovering it needs nothing more); with `lora`, peft
    LoRA (r=8, all linear layers) attached, as a trained method's model has it."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    source = resolve_model(spec)
    dtype = resolve_dtype(dtype)
    try:
        config = AutoConfig.from_pretrained(source.location)
        with init_empty_weights():
            if source.is_local and is_pruned_folder(source.location):
                model = pruned_skeleton(source.location, config, dtype)
            else:
                model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        # as a load does: a tied head is the embedding, not a parameter of its own (outside init_empty_weights,
        # which would register the shared tensor as a new meta parameter)
        model.tie_weights()
        if source.adapter:
            from peft import PeftModel

            with init_empty_weights():
                model = PeftModel.from_pretrained(model, source.adapter, low_cpu_mem_usage=True)
    except (OSError, ValueError) as err:
        raise LorashearError(f"could not read the configuration of model '{spec}': {err}") from err
    if lora:
        from peft import LoraConfig, get_peft_model

        if hasattr(model, "peft_config"):
            raise LorashearError(f"{spec} is a LoRA adapter folder and already has an adapter; drop --lora")
        with init_empty_weights():
            model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear"))
    return model.eval()


def load_tokenizer(spec: str):
    """Load the tokenizer that belongs to a model argument (an adapter's own, else its base model's)."""
    from transformers import AutoTokenizer

    source = resolve_model(spec)
    has_own = source.adapter and (Path(source.adapter) / "tokenizer_config.json").is_file()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.adapter if has_own else source.location)
    except (OSError, ValueError) as err:
        raise LorashearError(f"could not load the tokenizer of '{spec}': {err}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """Merge every active LoRA adapter into its base weight and drop the adapters; returns the base model (in
    place, no copy). Each W ← W + s·BA is summed in float32, one layer at a time, and rounded once to W's dtype:
    a bfloat16 merge is the float32 merge rounded once (peft's merge adds a rounded s·BA to W in W's dtype)."""
    from peft.tuners.lora import LoraLayer

    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, LoraLayer):
                continue
            merged = set(module.merged_adapters)
            deltas = [module.get_delta_weight(a).float() for a in module.active_adapters
                      if a in module.lora_A and a not in merged]
            if deltas:
                weight = module.get_base_layer().weight
                weight.copy_((weight.float() + sum(deltas)).to(weight.dtype))
    return model.unload()


def release_memory(device: torch.device) -> None:
    """Collect freed models now and hand CUDA's cached blocks back (its allocator keeps them for this process)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def tied_aliases(model: torch.nn.Module) -> dict[str, str]:
    """state_dict names that share a tensor with an earlier name (tied embeddings) -> that name."""
    first: dict[int, str] = {}
    aliases = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in first:
            aliases[name] = first[id(t)]
        else:
            first[id(t)] = name
    return aliases


def count_parameters(model: torch.nn.Module, include_lora: bool = True) -> int:
    """Parameters of a model, shared (tied) tensors counted once; `include_lora=False` counts the base
    model only (LoRA factors merge into it)."""
    # named_parameters() yields a shared tensor once, under its first name
    return sum(p.numel() for name, p in model.named_parameters() if include_lora or ".lora_" not in name)
