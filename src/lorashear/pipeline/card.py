"""Model cards: a Hugging Face `README.md` (YAML metadata + markdown) for every folder a run exports."""

from __future__ import annotations

from pathlib import Path

import yaml

from lorashear.evaluate import AVERAGE_METRIC, EvalResult
from lorashear.io import write_atomic

# Built-in model names and the hub model they were made from (the card's `base_model`).
HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def card_metadata(recipe: dict, pruning: dict | None, result: EvalResult | None, recovered: bool) -> dict:
    """The card's YAML header: base_model, tags, method, ratio, and the evaluation as a `model-index`."""
    model = recipe["model"]
    prune = recipe["prune"]
    method = (pruning or {}).get("method", prune.get("method", "random"))
    meta = {
        "base_model": HUB_IDS.get(model, model),
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["lorashear", "pruned", "structured-pruning", method] + (["lora-recovered"] if recovered else []),
        "method": method,
        "ratio": (pruning or {}).get("ratio", prune.get("ratio")),
        "achieved_ratio": (pruning or {}).get("achieved_ratio"),
        "recovered": recovered,
    }
    if result is not None:
        metrics = [{"type": "perplexity", "name": f"PPL {corpus} ({r.describe()})", "value": round(r.ppl, 4)}
                   for corpus, r in result.ppl.items()]
        metrics += [{"type": AVERAGE_METRIC[task], "name": f"{task} (first {s.n})",
                     "value": round(100 * getattr(s, AVERAGE_METRIC[task]), 2)} for task, s in result.tasks.items()]
        if result.avg is not None:
            metrics.append({"type": "accuracy", "name": "zero-shot average", "value": round(100 * result.avg, 2)})
        meta["model-index"] = [{"name": f"{Path(model).name}-{method}-{'recovered' if recovered else 'pruned'}",
                                "results": [{"task": {"type": "text-generation"},
                                             "dataset": {"name": "lorashear evaluation", "type": "lorashear"},
                                             "metrics": metrics}]}]
    return meta


def write_model_card(folder: Path, recipe: dict, pruning: dict | None, result: EvalResult | None,
                     recovered: bool) -> Path:
    """Write `folder/README.md`: the metadata header, what the folder is, how to load it, its evaluation."""
    meta = card_metadata(recipe, pruning, result, recovered)
    lines = [f"# {meta['base_model']}, {meta['method']} {_ratio(meta['ratio'])} structured pruning"
             + (" + LoRA recovery" if recovered else ""), "",
             f"Made by lorashear (`lorashear run`) from `{recipe['model']}`: "
             f"{meta['method']} removed {_ratio(meta['achieved_ratio'])} of the parameters "
             + ("and LoRA recovery (merged) fine-tuned it." if recovered else "(no recovery)."), "",
             "```python", "import lorashear", f'model = lorashear.load("{folder.name}")  # or transformers'
             " AutoModelForCausalLM (trust_remote_code=True for per-layer sizes)", "```", ""]
    if result is not None:
        lines += ["## Evaluation", "", result.to_markdown()]
    text = "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + "\n".join(lines) + "\n"
    return write_atomic(folder / "README.md", text)


def _ratio(value: float | None) -> str:
    return "?" if value is None else f"{value:.2%}"
