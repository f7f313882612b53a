"""Recovery's plots: the loss per step with the stage boundary, and the mixture's weights over time."""

from __future__ import annotations

from pathlib import Path

from lorashear.train.logs import plot_loss


def plot_run(steps: list[dict], mixtures: dict[str, list[dict]], folder: Path) -> list[Path]:
    """loss.png (training loss per step, stage boundary marked) and mixture_<stage>.png (weights over time)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on training machines
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    boundary = next((r["step"] for r in steps if r["stage"] == "instruct"), None)
    marks = {boundary: "stage 2 starts"} if boundary is not None and boundary > steps[0]["step"] else {}
    written = [p for p in [plot_loss(steps, folder / "loss.png", marks)] if p is not None]
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
