"""Run logs in OUT: loss per step (JSONL), the mixture's per-interval records (JSON), and their plots."""

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


def plot_run(steps: list[dict], mixtures: dict[str, list[dict]], folder: Path) -> list[Path]:
    """loss.png (training loss per step, stage boundary marked) and mixture_<stage>.png (weights over time)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on training machines
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if steps:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=1, label="training loss")
        boundary = next((r["step"] for r in steps if r["stage"] == "instruct"), None)
        if boundary is not None and boundary > steps[0]["step"]:
            ax.axvline(boundary - 0.5, color="grey", ls="--", lw=1, label="stage 2 starts")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("loss (nats)")
        ax.legend()
        fig.tight_layout()
        written.append(folder / "loss.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    for stage, records in mixtures.items():
        if not records:
            continue
        names = list(records[0]["weights"])
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
        x = [r["step"] for r in records]
        for name in names:
            top.plot(x, [r["weights"][name] for r in records], marker=".", label=name)
            bottom.plot(x, [r["excess"][name] for r in records], marker=".", label=name)
        top.set_ylabel("sampling weight")
        bottom.set_ylabel("excess loss vs dense (nats)")
        bottom.set_xlabel("optimiser step")
        top.legend(fontsize=8)
        top.set_title(f"{stage}: mixture")
        fig.tight_layout()
        written.append(folder / f"mixture_{stage}.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written
