"""lorashear: structured pruning of LLMs through their LoRA adapters, with knowledge recovery.

The pipeline, one module per stage:
models/data -> graph (removable structures) -> prune (plans) -> compress (smaller HF folder)
-> recover (LoRA fine-tuning) -> evaluate (perplexity, zero-shot, speed).
"""

from lorashear.errors import LorashearError

__version__ = "0.1.0"

__all__ = ["LorashearError", "__version__", "load"]


def load(path_or_name: str, **kwargs):
    """Load a model (built-in name, local folder, .gguf file, pruned folder or hub id)."""
    # here, not at the top: torch and transformers (~6 s) would load with every lorashear.io/errors import
    from lorashear.models import load_model

    return load_model(path_or_name, **kwargs)
