"""`write_report(OUT)`: report.md (and the same as a standalone report.html), figures/*.png and the model
cards, from the stage outputs alone.

Nothing here loads or runs a model: every figure is read from the files the stages wrote, so
`lorashear report OUT` regenerates the report of any run, finished or not.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from lorashear.compress.export import PLAN_FILE, read_pruning_record
from lorashear.evaluate import AVERAGE_METRIC, EvalResult
from lorashear.evaluate.report import cell
from lorashear.evaluate.speed import SpeedComparison, machine_notes
from lorashear.graph.structures import Group
from lorashear.io import write_atomic
from lorashear.pipeline.card import write_model_card
from lorashear.pipeline.folders import RECIPE_FILE, RUN_FILE, STAGE_NAMES, finished_folder
from lorashear.pipeline.stages import MODEL_DIR, MODELS
from lorashear.recover.logs import plot_run
from lorashear.train.config import load_yaml
from lorashear.train.logs import read_jsonl

FIGURES = "figures"
# report.html's look: readable width, ruled tables, figures no wider than the page.
STYLE = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
         "table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.25rem .6rem}"
         "img{max-width:100%}code{background:#f3f3f3}")


def _json(path: Path | None) -> dict | None:
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


class RunOutputs:
    """The finished stages' files of one run folder, read once."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.recipe = load_yaml((out / RECIPE_FILE).read_text())
        self.run = _json(out / RUN_FILE) or {"invocations": [], "seconds": {}}
        self.folders = {name: finished_folder(out, name) for name in STAGE_NAMES}
        evaluated = self.folders["evaluate"]
        self.results = {}
        for name in MODELS:
            data = _json(evaluated / f"{name}.json") if evaluated else None
            if data is not None:
                self.results[name] = EvalResult.from_dict(data)
        self.sizes = _json(evaluated / "models.json") if evaluated else None
        speed = _json(evaluated / "speed.json") if evaluated else None
        self.speed = SpeedComparison.from_dict(speed) if speed else None
        pruned = self.model_dir("prune")
        self.pruning = read_pruning_record(pruned) if pruned and (pruned / PLAN_FILE).is_file() else None
        self.analysis = _json(self.folders["analyze"] / "analyze.json") if self.folders["analyze"] else None
        self.knowledge = _json(self.folders["knowledge"] / "knowledge.json") if self.folders["knowledge"] else None

    def model_dir(self, stage: str) -> Path | None:
        return self.folders[stage] / MODEL_DIR if self.folders[stage] else None

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.out))


def write_report(out: str | Path) -> Path:
    """Write OUT/report.md and OUT/figures/, and a model card in every exported model folder."""
    run = RunOutputs(Path(out))
    figures = run.out / FIGURES
    figures.mkdir(exist_ok=True)
    parts = [_header(run), _results(run, figures), _structure(run, figures), _knowledge(run), _recovery(run, figures),
             _reproduce(run)]
    text = "\n".join(p for p in parts if p) + "\n"
    report = write_atomic(run.out / "report.md", text)
    write_atomic(run.out / "report.html", html_page(text, title=f"lorashear report: {run.out.name}"))
    for stage, name in (("prune", "pruned"), ("recover", "recovered")):
        if run.folders[stage] is not None:
            write_model_card(run.model_dir(stage), run.recipe, run.pruning, run.results.get(name),
                             recovered=stage == "recover")
    return report


def html_page(markdown: str, title: str) -> str:
    """A standalone HTML page of Markdown text (CommonMark with tables, via markdown-it; raw HTML in the text is
    shown, not run); relative figure links stay as they are, so the page shows the run folder's figures."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body>\n{body}</body></html>\n")


def _header(run: RunOutputs) -> str:
    prune = run.recipe["prune"]
    done = [name for name, folder in run.folders.items() if folder is not None]
    dtype = run.run.get("dtype", "float32")  # run folders from before `dtype` existed ran in float32
    return (f"# lorashear run: {run.recipe['model']}, {prune.get('method', 'random')} "
            f"{prune.get('ratio', 0.2):.0%}\n\nStages finished: {', '.join(done) or 'none'} "
            f"(run folder `{run.out}`; recipe `{RECIPE_FILE}`; weights in {dtype}).\n")


def _results(run: RunOutputs, figures: Path) -> str:
    """Dense vs pruned vs recovered: parameters, weights, PPL, tasks, average, speed (paired ratios)."""
    if not run.results:
        return "## Results\n\nNo evaluation yet (the `evaluate` stage is off or has not finished).\n"
    names = list(run.results)
    rows = [("parameters", [f"{run.results[n].params:,}" for n in names])]
    if run.sizes:
        rows.append(("weights (MiB, as loaded)", [f"{run.sizes[n]['weights_bytes'] / 2**20:.1f}" for n in names]))
    first = run.results[names[0]]
    for corpus, r in first.ppl.items():
        rows.append((f"PPL {corpus} ({cell(r.describe())})", [_fmt(ppl_of(run.results[n], corpus), 2) for n in names]))
    for task, score in first.tasks.items():
        rows.append((f"{task} {AVERAGE_METRIC[task]} (first {score.n})",
                     [_fmt(percent(task_of(run.results[n], task)), 1) for n in names]))
    if first.avg is not None:
        rows.append(("zero-shot average", [_fmt(percent(run.results[n].avg), 2) for n in names]))
    notes = []
    if run.speed is not None:
        s = run.speed
        for metric, label, digits in (("prefill", f"prefill tok/s ({s.prefill_tokens} tokens)", 0),
                                      ("decode", f"decode tok/s ({s.decode_tokens} new)", 1)):
            rows.append((label, [f"{s.model(n).rate(metric).median:.{digits}f}" for n in names]))
            rows.append((f"{metric} × {s.reference.name}", [s.ratio_text(n, metric) for n in names]))
        notes = [s.describe(), "", *machine_notes(s.machine, s.warnings)]
    lines = ["## Results", "", "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in rows]
    picture = _summary_figure(run, names, figures / "summary.png")
    lines += ["", "Zero-shot average: acc for boolq and winogrande, acc_norm for the others (as LLM-Pruner).", "",
              *notes, f"![dense vs pruned vs recovered]({run.rel(picture)})", ""]
    return "\n".join(lines)


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def ppl_of(result: EvalResult, corpus: str) -> float | None:
    return result.ppl[corpus].ppl if corpus in result.ppl else None


def task_of(result: EvalResult, task: str) -> float | None:
    """The task's score by the metric the average uses (acc or acc_norm)."""
    return getattr(result.tasks[task], AVERAGE_METRIC[task]) if task in result.tasks else None


def _structure(run: RunOutputs, figures: Path) -> str:
    """What was removed: the prune record, and per layer the KV groups and MLP channels left (bar chart)."""
    if run.pruning is None:
        return ""
    p = run.pruning
    lines = ["## Pruning", "",
             f"Method `{p['method']}`, target ratio {p['ratio']:.2%}, achieved {p['achieved_ratio']:.2%} "
             f"({p['params_before']:,} → {p['params_after']:,} parameters), structures {', '.join(p['kinds'])}, "
             f"{'uniform' if p['uniform'] else 'global'} selection; folder `{run.rel(run.model_dir('prune'))}` "
             f"({'plain HF config' if p['plain'] else 'per-layer sizes, loads with lorashear.load or trust_remote_code'}).",
             ""]
    picture = _layers_figure(run, figures / "layers.png")
    if picture is not None:
        lines += [f"![remaining structures per layer]({run.rel(picture)})", ""]
    else:
        lines += ["(Per-layer figure: needs the `analyze` stage's counts, which this run does not have.)", ""]
    curves = run.model_dir("prune") / p["method"] / "curves.png"  # a trained method's loss and sparsity per step
    if curves.is_file():
        lines += [f"Training while pruning (`{p['method']}`): loss and sparsity per optimiser step "
                  f"(`{run.rel(curves.with_name('steps.jsonl'))}`).", "", f"![loss and sparsity]({run.rel(curves)})", ""]
    return "\n".join(lines)


def remaining_per_layer(analysis: dict, removed: list[Group]) -> dict[str, dict[int, tuple[int, int]]]:
    """Per kind and layer: (groups left, groups before), from analyze.json counts and the removed groups."""
    gone: dict[tuple[str, int], int] = {}
    for g in removed:
        if g.layer is not None:
            gone[(g.kind, g.layer)] = gone.get((g.kind, g.layer), 0) + 1
    return {kind: {int(layer): (total - gone.get((kind, int(layer)), 0), total) for layer, total in per_layer.items()}
            for kind, per_layer in analysis["layers"].items()}


def _layers_figure(run: RunOutputs, path: Path) -> Path | None:
    if run.analysis is None:
        return None
    shown = [k for k in ("kv_group", "query_head", "mlp_channel") if k in run.analysis["layers"]]
    if not shown:
        return None
    left = remaining_per_layer(run.analysis, run.pruning["removed"])
    plt = _pyplot()
    fig, axes = plt.subplots(len(shown), 1, figsize=(8, 2.4 * len(shown)), squeeze=False)
    for ax, kind in zip(axes[:, 0], shown, strict=True):
        layers = sorted(left[kind])
        ax.bar(layers, [left[kind][i][1] for i in layers], color="lightgrey", label="dense")
        ax.bar(layers, [left[kind][i][0] for i in layers], color="tab:blue", label="kept")
        ax.set_ylabel(f"{kind}s")
        ax.legend(fontsize=7, loc="lower right")
    axes[-1, 0].set_xlabel("layer")
    axes[0, 0].set_title("structures kept per layer (kv_group: one KV head with its query heads)")
    return _save(fig, path)


def _summary_figure(run: RunOutputs, names: list[str], path: Path) -> Path:
    """Bars per model: parameters, first PPL, zero-shot average."""
    panels = [("parameters (M)", [run.results[n].params / 1e6 for n in names])]
    corpus = next(iter(run.results[names[0]].ppl), None)
    if corpus is not None:
        panels.append((f"PPL {corpus} (log)", [run.results[n].ppl[corpus].ppl for n in names]))
    if run.results[names[0]].avg is not None:
        panels.append(("zero-shot avg (%)", [100 * (run.results[n].avg or 0) for n in names]))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), squeeze=False)
    for ax, (title, values) in zip(axes[0], panels, strict=True):
        ax.bar(names, values, color=["tab:grey", "tab:red", "tab:green"][: len(names)])
        ax.set_title(title, fontsize=9)
        if "log" in title:
            ax.set_yscale("log")
        ax.tick_params(labelsize=8)
    return _save(fig, path)


def _knowledge(run: RunOutputs) -> str:
    if run.knowledge is None:
        return ""
    k = run.knowledge
    settings = k["settings"]
    picture = run.folders["knowledge"] / "knowledge.png"
    return "\n".join([
        "## Knowledge distribution", "",
        f"Rule `{settings['rule']}`, criterion `{settings['criterion']}`, probe ratios {settings['ratios']}; "
        f"dense held-out loss {_fmt(k['dense_loss'], 3)} nats; {len(k['unprunable'])} of {len(k['clusters'])} "
        f"clusters unprunable: {', '.join(k['unprunable']) or 'none'}.", "",
        f"![knowledge heatmap]({run.rel(picture)})", ""])


def _recovery(run: RunOutputs, figures: Path) -> str:
    """The recovery's budget, final vs dense losses per category, and its loss and mixture curves."""
    folder = run.model_dir("recover")
    if folder is None:
        return ""

    summary = _json(folder / "recovery.json") or {}
    mixtures = _json(folder / "logs" / "mixture.json") or {}
    pictures = plot_run(read_jsonl(folder / "logs" / "steps.jsonl"), mixtures, figures / "recovery")
    lines = ["## Recovery", "",
             f"{summary.get('steps', '?')} optimiser steps, {summary.get('tokens_seen', 0):,} tokens; "
             f"merged model `{run.rel(folder)}`.", ""]
    final, reference = summary.get("final_losses", {}), summary.get("reference_losses", {})
    if final:
        lines += ["| stage | category | loss after | dense |", "|---|---|---:|---:|"]
        for stage, losses in final.items():
            for category, loss in losses.items():
                lines.append(f"| {stage} | {category} | {loss:.3f} | {_fmt((reference.get(stage) or {}).get(category), 3)} |")
        lines.append("")
    lines += [f"![{p.stem}]({run.rel(p)})" for p in pictures]
    return "\n".join(lines + [""])


def _reproduce(run: RunOutputs) -> str:
    """Exact commands, versions and hardware of every invocation; seconds per stage."""
    lines = ["## How this was made", ""]
    for inv in run.run["invocations"]:
        versions = ", ".join(f"{k} {v}" for k, v in inv["versions"].items())
        hw = inv["hardware"]
        lines += [f"- {inv['started']}: `{' '.join(inv['command'])}`",
                  f"  - {versions}",
                  f"  - {hw['device']}, {hw['cpu_count']} cores, {hw['torch_threads']} torch threads, "
                  f"load {_fmt(hw.get('load_average'), 1)}; {hw['platform']}"]
    if run.run["seconds"]:
        resumed = run.run.get("resumed", [])
        lines += ["", "Seconds per stage (last run of each" + ("; * resumed: its last attempt only" if resumed else "")
                  + "): " + ", ".join(f"{name}{'*' if name in resumed else ''} {s:.0f}"
                                      for name, s in run.run["seconds"].items())]
    return "\n".join(lines + [""])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Save through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    _pyplot().close(fig)
    tmp.replace(path)
    return path
