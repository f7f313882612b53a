"""Torch-Pruning (VainF/Torch-Pruning, `pip install torch-pruning==1.6.1`) as an external baseline.

Its own structured pruning as its LLM example (examples/LLMs/prune_llm.py) runs it: `MetaPruner`,
local (uniform) ratios, the LM head's vocabulary rows kept, kept widths a multiple of `round_to`
(the example's 4 and the head count); with its Taylor importance (|w·∂L/∂w| per group; the example
scores weight magnitude) on our calibration text (`lorashear.importance.calibration`, the recipe's
`calibration:` section). Then the recipe's own recovery (`Recipe.recover`), so the row sees the
same calibration data and token budget as ours.

What TP prunes here: the residual width (embedding, every norm and projection input) and each
layer's MLP channels, by the same width ratio, chosen so that `--ratio` of all parameters goes.
Attention heads stay whole (so every GQA group stays intact): under transformers 5, TP 1.6.1's
tracer does not see the head structure — SDPA (grouped-query in one kernel) is traced as an
element-wise op joining q (H heads) and k/v (KV heads), eager's `repeat_kv` expand is not
index-mapped, and the `rotate_half` slice/cat cycle of RoPE sends its index propagation round
forever. The example's head pruning needs that structure, so the q/k/v projections are left out
as roots (their inputs still follow the residual width).

    PYTHONPATH=src python benchmarks/torch_pruning_baseline.py --ratio 0.2 -o OUT
        [--recipe benchmarks/methods_base.yaml] [--no-recover] [KEY.SUB=VALUE ...]

OUT is laid out as `lorashear run`'s: OUT/03-prune/model (with pruning.json), OUT/04-recover/model,
OUT/run.json (seconds per stage).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from _common import METHODS_RECIPE
from torch import nn

from lorashear.errors import LorashearError
from lorashear.importance.calibration import CalibrationConfig, iterate_batches, load_calibration
from lorashear.io import write_atomic
from lorashear.models import count_parameters, load_model, load_tokenizer
from lorashear.pipeline.runner import stage_folder
from lorashear.pipeline.stages import MODEL_DIR

ROUND_TO = 4  # the example's; widths are also kept a multiple of the head count (`round_to`)
TP_VERSION = "1.6.1"


def _torch_pruning():
    try:
        import torch_pruning
    except ImportError as err:
        raise LorashearError(f"the Torch-Pruning baseline needs `pip install torch-pruning=={TP_VERSION}` "
                             "(in the dev extra: pip install -e '.[dev]')") from err
    return torch_pruning


def _attention_projections(model: nn.Module) -> list[nn.Module]:
    """Every q/k/v projection: left out as roots, so heads stay whole (see the module docstring)."""
    return [getattr(m, p) for name, m in model.named_modules() if name.endswith("self_attn")
            for p in ("q_proj", "k_proj", "v_proj")]


def round_to(config) -> int:
    """Kept widths are multiples of this: the example's ROUND_TO and the head count (transformers 5's configs
    refuse a hidden size that is not a multiple of num_attention_heads, even with head_dim set)."""
    return math.lcm(ROUND_TO, config.num_attention_heads)


def prune_width(model: nn.Module, width_ratio: float, importance, example: torch.Tensor) -> None:
    """TP's MetaPruner on `model` in place: residual width and MLP channels, `width_ratio` of each, local."""
    tp = _torch_pruning()
    head = model.get_output_embeddings()
    tied = head.weight is model.get_input_embeddings().weight
    pruner = tp.pruner.MetaPruner(
        model, example_inputs=example, importance=importance, global_pruning=False, pruning_ratio=width_ratio,
        ignored_layers=[head, *_attention_projections(model)], round_to=round_to(model.config),
        unwrapped_parameters=[(m.weight, 0) for m in model.modules() if type(m).__name__.endswith("RMSNorm")],
        forward_fn=lambda m, ids: m(ids, use_cache=False), output_transform=lambda out: out.logits)
    for group in pruner.step(interactive=True):
        group.prune()
    if tied:  # TP gives the embedding and the head a new tensor each (the same columns cut): share them again
        if not torch.equal(head.weight, model.get_input_embeddings().weight):
            raise LorashearError("Torch-Pruning cut the tied embedding and LM head differently")
        model.tie_weights()
    _fix_config(model)


def _fix_config(model: nn.Module) -> None:
    """The HF config of the pruned shapes (uniform across layers): hidden size, MLP width, head_dim explicit."""
    config, layer = model.config, model.model.layers[0]
    attention = layer.self_attn
    config.head_dim = attention.head_dim  # no longer hidden_size // heads
    config.hidden_size = model.get_input_embeddings().weight.shape[1]
    config.intermediate_size = layer.mlp.gate_proj.out_features
    config.num_attention_heads = attention.q_proj.out_features // attention.head_dim
    config.num_key_value_heads = attention.k_proj.out_features // attention.head_dim


def params_at(config, width_ratio: float) -> int:
    """Parameters of `config`'s model after `prune_width(width_ratio)`: TP prunes a 1-layer, 64-token
    copy (its widths depend only on the ratio), the full shape is counted on the meta device."""
    from transformers import AutoModelForCausalLM

    tp = _torch_pruning()
    proxy_config = config.__class__.from_dict({**config.to_dict(), "num_hidden_layers": 1, "vocab_size": 64})
    proxy = AutoModelForCausalLM.from_config(proxy_config).eval()
    prune_width(proxy, width_ratio, tp.importance.MagnitudeImportance(), torch.zeros(1, 4, dtype=torch.long))
    pruned = config.__class__.from_dict({**config.to_dict(), **{k: getattr(proxy.config, k) for k in (
        "hidden_size", "intermediate_size", "head_dim", "num_attention_heads", "num_key_value_heads")}})
    with torch.device("meta"):
        return count_parameters(AutoModelForCausalLM.from_config(pruned))


def width_ratio_for(config, ratio: float, steps: int = 12) -> float:
    """The width ratio whose pruned model has the parameter count nearest to `ratio` fewer (bisection on
    `params_at`; widths move in steps of `round_to`, so every probed ratio is a candidate)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        dense = count_parameters(AutoModelForCausalLM.from_config(config))
    removed = {}  # width ratio -> fraction of parameters it removes
    low, high = 0.0, min(1.0, 2 * ratio)
    for _ in range(steps):
        middle = (low + high) / 2
        removed[middle] = 1 - params_at(config, middle) / dense
        low, high = (middle, high) if removed[middle] < ratio else (low, middle)
    return round(min(removed, key=lambda width: abs(removed[width] - ratio)), 4)


def accumulate_gradients(model: nn.Module, batches: torch.Tensor, batch_size: int = 4) -> None:
    """∂L/∂w summed over the calibration batches, in `.grad` (what TP's Taylor importance reads)."""
    model.zero_grad()
    for ids in iterate_batches(batches, batch_size, desc="TP taylor gradients"):
        (model(ids, labels=ids, use_cache=False).loss * len(ids) / len(batches)).backward()


def prune_folder(model_spec: str, ratio: float, calibration: CalibrationConfig, out: Path) -> dict:
    """Prune `model_spec` with TP to about `ratio` of its parameters; write a loadable HF folder with
    pruning.json (as `lorashear prune` does: method, settings, params before/after). Returns that record."""
    tp = _torch_pruning()
    start = time.time()
    model, tokenizer = load_model(model_spec, device="cpu"), load_tokenizer(model_spec)
    params_before = count_parameters(model)
    width_ratio = width_ratio_for(model.config, ratio)
    data = load_calibration(tokenizer, calibration)
    accumulate_gradients(model, data.batches)
    prune_width(model, width_ratio, tp.importance.GroupTaylorImportance(), data.batches[:1, :16])
    model.zero_grad(set_to_none=True)
    params_after = count_parameters(model)
    record = {"method": "torch-pruning", "package": f"torch-pruning {tp.__version__}", "model": model_spec,
              "importance": "GroupTaylorImportance (|w·g|, group mean)", "width_ratio": width_ratio,
              "round_to": round_to(model.config), "pruned": "residual width and MLP channels (uniform); attention heads whole",
              "calibration": {"data": list(calibration.data), "samples": calibration.samples,
                              "seq_len": calibration.seq_len, "tokens": data.tokens},
              "target_ratio": ratio, "params_before": params_before, "params_after": params_after,
              "achieved_ratio": 1 - params_after / params_before, "seconds": round(time.time() - start, 1)}
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "pruning.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return record


def run(ratio: float, out: Path, recipe_path: Path = METHODS_RECIPE, overrides: Sequence[str] = (), recover: bool = True) -> dict:
    """Prune into OUT/03-prune/model, then the recipe's recovery (with `key.sub=value` overrides, as
    `lorashear run`) into OUT/04-recover/model; finished stages are kept (a rerun continues).
    Writes OUT/run.json after each stage (every invocation; seconds per stage, a resumed recovery's of its last
    attempt only, as `lorashear run`'s) and returns it."""
    from lorashear.pipeline.recipe import load_recipe
    from lorashear.recover import recover as run_recovery
    from lorashear.train.checkpoint import latest_checkpoint, partial_dir

    recipe = load_recipe(recipe_path, [*overrides, f"prune.ratio={ratio}"])
    run_log_path = out / "run.json"
    run_log = json.loads(run_log_path.read_text()) if run_log_path.is_file() else {"seconds": {}}
    run_log.setdefault("invocations", []).append({"command": " ".join(sys.argv), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    pruned = stage_folder(out, "prune") / MODEL_DIR
    pruned.parent.mkdir(parents=True, exist_ok=True)

    def stage_done(stage: str, start: float) -> None:  # kept at once: a later stage may be killed
        run_log["seconds"][stage] = time.time() - start
        write_atomic(run_log_path, json.dumps(run_log, indent=2) + "\n")

    if not (pruned / "pruning.json").is_file():
        start = time.time()
        prune_folder(recipe.model, ratio, recipe.calibration(), pruned)
        stage_done("prune", start)
    recovered = stage_folder(out, "recover") / MODEL_DIR
    if recover and not (recovered / "config.json").is_file():
        start = time.time()
        recovered.parent.mkdir(parents=True, exist_ok=True)
        resume = latest_checkpoint(partial_dir(recovered)) is not None  # an interrupted recovery continues
        run_recovery(recipe.recover(pruned, recovered, resume))
        run_log["resumed"] = ["recover"] if resume else []
        stage_done("recover", start)
    write_atomic(run_log_path, json.dumps(run_log, indent=2) + "\n")
    return run_log


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.2, help="fraction of all parameters removed")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--recipe", type=Path, default=METHODS_RECIPE, help="its model, calibration and recover sections")
    parser.add_argument("--no-recover", action="store_true")
    parser.add_argument("overrides", nargs="*", help="KEY.SUB=VALUE overrides of the recipe (as `lorashear run`)")
    args = parser.parse_args()
    run(args.ratio, args.out, args.recipe, args.overrides, recover=not args.no_recover)
    return 0


if __name__ == "__main__":
    sys.exit(main())
