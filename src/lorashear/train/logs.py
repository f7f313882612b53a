"""The step log of a run (OUT/logs/steps.jsonl, one JSON line per optimiser step) and its loss plot."""

from __future__ import annotations

import json
from pathlib import Path


class StepLog:
    """Append-only JSONL of per-step records; on resume, records after the checkpoint are dropped."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            path.write_text("")
        else:  # the killed run may have logged steps the checkpoint does not hold
            kept = [r for r in read_jsonl(path) if r["step"] <= resume_step]
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss(steps: list[dict], path: Path, marks: dict[int, str] | None = None) -> Path | None:
    """Training loss per step as a PNG, with a dashed line before each step in `marks` (e.g. a stage start)."""
    if not steps:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on training machines
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=1, label="training loss")
    for step, label in (marks or {}).items():
        ax.axvline(step - 0.5, color="grey", ls="--", lw=1, label=label)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (nats)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
