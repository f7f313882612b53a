"""The knowledge heatmap: layers × cluster kind, coloured by loss deviation, unprunable cells marked."""

from __future__ import annotations

from pathlib import Path

from lorashear.knowledge.analysis import KnowledgeResult


def heatmap(result: KnowledgeResult, path: str | Path) -> Path:
    """Write a PNG: one column per layer, one row per kind (attention, MLP); x marks unprunable clusters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    layered = [c for c in result.clusters if c.layer is not None]
    kinds = sorted({c.kind for c in layered}, key=["attention", "mlp"].index)
    layers = sorted({c.layer for c in layered})
    grid = np.full((len(kinds), max(len(layers), 1)), np.nan)
    for c in layered:
        if c.mean_deviation is not None:  # unprobed (rules none/fixed, one-group clusters): left blank
            grid[kinds.index(c.kind), layers.index(c.layer)] = c.mean_deviation
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(layers) + 2), 1.2 + 0.6 * len(kinds)))
    image = ax.imshow(grid, aspect="auto", cmap="magma_r")
    for c in layered:
        if c.unprunable:
            ax.text(layers.index(c.layer), kinds.index(c.kind), "x", ha="center", va="center", color="cyan")
    ax.set_yticks(range(len(kinds)), kinds)
    ax.set_xticks(range(len(layers)), [str(layer) for layer in layers], fontsize=7)
    ax.set_xlabel("layer")
    measured = "" if result.dense_loss is not None else "not measured by this rule; "
    ax.set_title(f"loss increase when a cluster is pruned ({measured}nats; x = unprunable, rule {result.settings['rule']})")
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
