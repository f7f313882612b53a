"""Results JSON -> Markdown: every table of BENCHMARKS.md, BENCHMARKS.md itself, and `write_results`, which saves a
script's results (STEM.json, its table STEM.md) and renders BENCHMARKS.md again.

BENCHMARKS.md at the repository root gathers the committed results: each section is its table (headings one level
down) under the command that produced it and the hardware it ran on. The side-by-side methods table lists every
planned row (each row of methods.py at 20% and 50%); rows not measured yet say `pending`. A recorded command is
shown with its machine's folders as WORKDIR (`command_text`). A test checks that BENCHMARKS.md is what this renders.

    PYTHONPATH=src python benchmarks/render.py [--results-md]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from _common import (
    ALL_METHOD_ROWS,
    BASELINE_ROWS,
    DEFAULT_SEED,
    GGUF_DECODE,
    GGUF_PREFILL,
    IMPORT_ONLY,
    MEMORY_STAGES,
    METHOD_ROWS,
    METHODS_MODEL,
    RANDOM_PRUNING_NOTE,
    RESULTS,
    ROOT,
    SCORED_MODELS,
    dense_parts,
    method_row_key,
    split_method_key,
)

from lorashear.evaluate import AVERAGE_METRIC, EvalResult, SpeedComparison
from lorashear.evaluate.estimate import TASK_SIZES
from lorashear.evaluate.speed import Machine

OUTPUT = ROOT / "BENCHMARKS.md"
PLANNED_RATIOS = (0.2, 0.5)  # the methods table's ratios (recipes/lorashear-20.yaml and -50.yaml are rows of each)
PLANNED_METHODS_COMMAND = ("PYTHONPATH=src python benchmarks/methods.py --workdir /tmp/methods --ratios 0.2,0.5 "
                           "--parts run,ppl,tasks,speed")
MEMORY_TARGET = 3.0  # bytes per parameter: 8B in 24 GB

# A run's own folders: --workdir's value, and folders under /work/keep or /tmp (their first part is the workdir);
# paths in a checkout of the repository.
WORKDIR_FLAG = re.compile(r"(--workdir[ =])[^\s`]+")
OUTSIDE_FOLDER = re.compile(r"(?:/work/keep|/tmp)/[^/\s`'\"]+")
CHECKOUT = re.compile(r"/work/(?:main|bench-src)(?:/|(?=[\s`'\"]|$))")


def command_text(command: str) -> str:
    """A recorded command as the tables show it: --workdir's value and the folders under /work/keep or /tmp read
    WORKDIR (`--pruned WORKDIR/20-lhspg-auto/03-prune/model`); paths in the repository's checkout are relative."""
    command = WORKDIR_FLAG.sub(r"\1WORKDIR", command)
    command = OUTSIDE_FOLDER.sub("WORKDIR", command)
    return CHECKOUT.sub(lambda found: "" if found.group().endswith("/") else ".", command)


def fmt(value: float | None, scale: float = 1.0) -> str:
    return "" if value is None else f"{scale * value:,.2f}"


def count(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def average_without(tasks: dict | None, left_out: str = "boolq") -> float | None:
    """A scored row's task average with one task left out. boolq by default: on its first 200 documents the dense
    model scores 38.5, below the majority answer's rate, and pruned models drift to that answer (56-64), so the
    seven-task average rises as models get worse and cannot rank rows; the other six can."""
    if not tasks or "tasks" not in tasks:
        return None
    others = [v for task, v in tasks["tasks"].items() if task != left_out]
    return sum(others) / len(others) if others else None


# ---------------------------------------------------------------------------------------------- methods.py


def chance_average() -> float:
    """The 7-task average of guessing: 1 / answer choices per document of each task (TASK_SIZES, counted
    from lm-eval's own requests: 2 for boolq, piqa, winogrande, 4 for the rest), ≈ 0.357."""
    return sum(1 / TASK_SIZES[task].requests_per_doc for task in AVERAGE_METRIC) / len(AVERAGE_METRIC)


def margin_kept(avg: float | None, dense_avg: float | None) -> float | None:
    """(avg − chance) / (dense − chance): the share of the dense model's above-chance accuracy kept."""
    if avg is None or dense_avg is None:
        return None
    return (avg - chance_average()) / (dense_avg - chance_average())


def speedup(row: dict, metric: str) -> str:
    spread = row.get("speed", {}).get(f"{metric}_vs_dense")
    if spread is None:
        return ""
    again = "†" if "pruned_again" in row["speed"] else ""  # a re-run's pruned folder (the scored one was gone)
    timed, scored = row["speed"].get("params"), row.get("run", {}).get("params")
    if again and None not in (timed, scored) and timed != scored:  # the re-run pruned to other widths: say by how much
        again += f" ({timed:,} params timed)"
    return f"{spread['median']:.2f}× ({spread['min']:.2f}–{spread['max']:.2f}){again}"


def methods_markdown(results: dict) -> str:
    """One table: each row's PPL, task average and margin kept before and after recovery, the exported
    folder's speed-up, the pipeline's time and memory; the dense row first."""
    dense = results["rows"].get("dense", {})
    dense_avg = dense.get("tasks", {}).get("avg")
    lines = [f"# Methods side by side on {results['model']}: pruned, then the same recovery", "",
             f"Command of the latest run: `{command_text(results['command'])}` (each part's own: its "
             "`benchmark_command` in the JSON)", "",
             f"Machine: {results['machine']}. Base recipe: `benchmarks/methods_base.yaml` (each row's overrides in the "
             "JSON; commands before it had its own file say `recipes/lorashear-20.yaml`, then the same settings). "
             "PPL: wiki, 128 × 512 (BOS + 511 text tokens); 7-task average: first "
             f"{results['limit']} documents each (acc for boolq/winogrande, acc_norm for the rest). Margin kept: "
             f"(avg − chance) / (dense − chance), chance = {100 * chance_average():.2f} (the mean over the seven tasks "
             "of 1 / answer choices: 2 for boolq, piqa, winogrande, 4 for the rest). Speed-up: the pruned folder "
             "against the dense model timed alternately in one window (prefill 512 tokens, decode 128 new tokens, "
             "batch 1): median (min–max) over rounds (the recovered folder has the same shapes). "
             "Pipeline s: the whole `lorashear run` (knowledge analysis, prune, recovery; a row whose analysis "
             "equals an earlier row's copies it and does not probe again); peak RSS of that process.",
             "", "| ratio | row | params | wiki PPL pruned | wiki PPL recovered | 7-task pruned | 7-task recovered "
             "| margin kept pruned / recovered | prefill × dense | decode × dense "
             "| pipeline s (prune / recover) | peak RSS MB | what |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
             f"| 0% | dense | {count(dense.get('params'))} | {fmt(dense.get('ppl', {}).get('ppl'))} | | "
             f"{fmt(dense_avg, 100)} | | | | | | | the unpruned model |"]
    for key, row in results["rows"].items():
        if key == "dense":
            continue
        ratio, name, seed = split_method_key(key)
        run = row.get("run", {})
        stages = run.get("stage_seconds", {})
        timing = f"{run['seconds']:,.0f} ({stages.get('prune', 0):,.0f} / {stages.get('recover', 0):,.0f})" if run else "pending"
        if run.get("knowledge_from"):
            timing += f", analysis copied from {run['knowledge_from']}"
        if run.get("invocations", 1) > 1:
            timing += f", the last of {run['invocations']} invocations only"
        if run.get("resumed_stages"):  # stages resumed from a checkpoint in that invocation: their last attempt
            timing += f" ({', '.join(run['resumed_stages'])} resumed: its last attempt)"
        averages = [row.get(m, {}).get("tasks", {}).get("avg") for m in SCORED_MODELS]
        cells = [fmt(row.get(m, {}).get("ppl", {}).get("ppl")) for m in SCORED_MODELS] + [fmt(a, 100) for a in averages]
        margins = [fmt(margin_kept(a, dense_avg), 100) for a in averages]
        cells += [" / ".join(margins) if any(margins) else "", speedup(row, "prefill"), speedup(row, "decode")]
        what = METHOD_ROWS.get(name, BASELINE_ROWS.get(name, ("",)))[0]
        shown = name if seed == DEFAULT_SEED else f"{name} seed={seed}"
        lines.append(f"| {ratio} | {shown} | {count(run.get('params'))} | {' | '.join(cells)} | {timing} | "
                     f"{run.get('peak_rss_mb', '')} | {what} |")
    lines += ["", "Empty cells and `pending` rows: not measured yet (the script resumes them). † Timed on a re-run "
              "of the row's recipe up to its prune stage (the scored run's folder was gone; same recipe, same widths "
              "up to the run-to-run spread; its command: `pruned_again` in the JSON; the timed folder's parameter count, "
              "when recorded, is named in the cell if it differs from the scored run's).", *seed_table(results),
              *task_table(results)]
    return "\n".join(lines) + "\n"


def mean_sd(values: list[float | None], scale: float = 1.0) -> str:
    """"mean ± sample sd" of the measured values (one value: itself), "(n=k)" when only k of them are measured."""
    measured = [scale * v for v in values if v is not None]
    if not measured:
        return ""
    text = f"{statistics.fmean(measured):,.2f}"
    if len(measured) > 1:
        text += f" ± {statistics.stdev(measured):,.2f}"
    return text + (f" (n={len(measured)})" if len(measured) < len(values) else "")


def seeded_runs(results: dict) -> dict[tuple[str, str], dict[int, dict]]:
    """(ratio, row) -> seed -> its row, for the rows run with several seeds."""
    runs: dict[tuple[str, str], dict[int, dict]] = {}
    for key, row in results["rows"].items():
        if key != "dense" and "run" in row:
            ratio, name, seed = split_method_key(key)
            runs.setdefault((ratio, name), {})[seed] = row
    return {group: by_seed for group, by_seed in runs.items() if len(by_seed) > 1}


def seed_gaps(results: dict) -> list[str]:
    """Each pair of seeded rows of one ratio: the gap of their mean recovered wiki PPL, in pooled sample standard
    deviations, and Welch's t; [] before two rows of a ratio have several seeds."""
    ppl = {group: [row["recovered"]["ppl"]["ppl"] for row in by_seed.values() if "ppl" in row.get("recovered", {})]
           for group, by_seed in seeded_runs(results).items()}
    ppl = {group: values for group, values in ppl.items() if len(values) > 1}
    pairs = [(a, b) for a in ppl for b in ppl if a[0] == b[0] and a < b]
    if not pairs:
        return []
    lines = ["", "Gaps between them (recovered wiki PPL, first row minus second): in pooled sample standard deviations "
             "and as Welch's t.", "", "| ratio | row | minus row | PPL gap | pooled sd | gap / sd | Welch t |",
             "|---|---|---|---:|---:|---:|---:|"]
    for a, b in pairs:
        x, y = ppl[a], ppl[b]
        gap, vx, vy = statistics.fmean(x) - statistics.fmean(y), statistics.variance(x), statistics.variance(y)
        pooled = (((len(x) - 1) * vx + (len(y) - 1) * vy) / (len(x) + len(y) - 2)) ** 0.5
        welch = gap / (vx / len(x) + vy / len(y)) ** 0.5
        lines.append(f"| {a[0]} | {a[1]} | {b[1]} | {gap:+.2f} | {pooled:.2f} | {gap / pooled:+.2f} | {welch:+.2f} |")
    return lines


def seed_table(results: dict) -> list[str]:
    """Rows run with several seeds: mean ± sample standard deviation over the seeds of wiki PPL and of the
    six-task average without boolq, pruned and recovered; [] before any row has a second seed."""
    several = seeded_runs(results)
    if not several:
        return []
    lines = ["", "Rows run with several seeds of the pruning run (calibration draw; LHSPG's data order and LoRA "
             "init; recovery's seed fixed): mean ± sample standard deviation over the seeds; (n=k): only k seeds "
             "measured so far. 6-task: the average without boolq (`average_without` in benchmarks/render.py).", "",
             "| ratio | row | seeds | n | wiki PPL pruned | wiki PPL recovered | 6-task pruned | 6-task recovered |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for (ratio, name), by_seed in several.items():
        rows = [by_seed[seed] for seed in sorted(by_seed)]
        cells = [mean_sd([row.get(m, {}).get("ppl", {}).get("ppl") for row in rows]) for m in SCORED_MODELS]
        cells += [mean_sd([average_without(row.get(m, {}).get("tasks")) for row in rows], 100) for m in SCORED_MODELS]
        lines.append(f"| {ratio} | {name} | {', '.join(map(str, sorted(by_seed)))} | {len(rows)} | {' | '.join(cells)} |")
    return lines + seed_gaps(results)


def task_table(results: dict) -> list[str]:
    """The seven tasks one by one (accuracy %, the metric of the average) of every scored model; [] before any."""
    scored = [("0%", "dense", "", results["rows"].get("dense", {}).get("tasks"))]
    for key, row in results["rows"].items():
        if key != "dense":
            scored += [(*key.split(" ", 1), model, row.get(model, {}).get("tasks")) for model in SCORED_MODELS]
    scored = [entry for entry in scored if entry[3] and "tasks" in entry[3]]
    if not scored:
        return []
    lines = ["", "The seven tasks (first {} documents each; the average without boolq beside the average: see "
             "`average_without` in benchmarks/render.py):".format(results["limit"]), "",
             f"| ratio | row | model | {' | '.join(AVERAGE_METRIC)} | average | without boolq |",
             "|---|---|---|" + "---:|" * (len(AVERAGE_METRIC) + 2)]
    for ratio, name, model, tasks in scored:
        cells = [fmt(tasks["tasks"].get(task), 100) for task in AVERAGE_METRIC]
        lines.append(f"| {ratio} | {name} | {model} | {' | '.join(cells)} | {fmt(tasks['avg'], 100)} | "
                     f"{fmt(average_without(tasks), 100)} |")
    return lines


def methods_results(results: dict | None) -> dict:
    """The methods results with every planned row present (an empty row renders as pending)."""
    results = results or {"model": METHODS_MODEL, "command": PLANNED_METHODS_COMMAND + " (planned)",
                          "machine": "pending", "limit": 200, "rows": {"dense": {}}}
    rows = dict(results["rows"])
    for ratio in PLANNED_RATIOS:
        for name in ALL_METHOD_ROWS:
            rows.setdefault(method_row_key(ratio, name), {})
    return {**results, "rows": rows}


# ---------------------------------------------------------------------------------------------- importance.py


def importance_markdown(results: dict) -> str:
    """The results table (dense first), with the command and machine."""
    lines = [f"# One-shot pruning of {results['model']}, no recovery", "",
             f"Command: `{command_text(results['command'])}`", "",
             f"Machine: {results['machine']}. PPL: wiki, {results.get('ppl_convention', '')}; "
             f"average of the seven tasks (first {results['limit']} documents each; acc for boolq/winogrande, "
             "acc_norm for the rest; without boolq: the other six, see `average_without`). Prune time and peak memory are of the whole `lorashear prune` process "
             "(load, calibration, knowledge analysis, scoring, compress, export).", "",
             "| ratio | method | unprunable rule | params | wiki PPL | 7-task avg | 6-task avg (no boolq) | prune s "
             "| peak RSS MB | unprunable clusters |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for key, row in results["rows"].items():
        ppl = row.get("ppl", {}).get("ppl")
        avg = row.get("tasks", {}).get("avg")
        six = average_without(row.get("tasks"))
        prune = row.get("prune", {})
        ratio, method, rule = (key.split(" ") + ["", ""])[:3] if key != "dense" else ("0%", "dense", "—")
        lines.append(
            f"| {ratio} | {method} | {rule} | {row.get('params', prune.get('params', 0)):,} | "
            f"{'' if ppl is None else f'{ppl:,.2f}'} | {'' if avg is None else f'{100 * avg:.2f}'} | "
            f"{'' if six is None else f'{100 * six:.2f}'} | "
            f"{prune.get('seconds', '')} | {prune.get('peak_rss_mb', '')} | "
            f"{', '.join(prune.get('unprunable', [])) or ('' if key == 'dense' else 'none')} |")
    lines.append("")
    lines.append("Empty cells: not measured yet (the script resumes them).")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- prune_cost.py


def prune_cost_markdown(results: dict) -> str:
    taylor = results["rows"].get("taylor", {}).get("peak_rss_mb")
    lines = [f"# Peak memory and time of the gradient-based pruners on {results['model']}", "",
             f"Command: `{command_text(results['command'])}`", "", f"Machine: {results['machine']}. Each row is one "
             "`lorashear prune` process (load, calibration or training, scoring, compress, export), measured from the "
             "outside; micro-batch 4 × 256 tokens for all.", "",
             "| row | peak RSS MB | × taylor | wall s | training tok/s (median) | in / outside saliency windows | "
             "load avg | command |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, row in results["rows"].items():
        ratio = f"{row['peak_rss_mb'] / taylor:.2f}" if taylor else ""
        lines.append(f"| {name} | {row['peak_rss_mb']:,} | {ratio} | {row['seconds']:,} | "
                     f"{row.get('train_tokens_per_s', '')} | {saliency_windows(row)} | {row['load_avg']} | "
                     f"`{command_text(row['command'])}` |")
    return "\n".join(lines) + "\n"


def saliency_windows(row: dict) -> str:
    """'window / other tok/s (n window steps)', or empty for a row without saliency windows."""
    if "window_tokens_per_s" not in row:
        return ""
    return f"{row['window_tokens_per_s']} / {row['other_tokens_per_s']} ({row['window_steps']} steps in windows)"


# ---------------------------------------------------------------------------------------------- memory_scale.py


def memory_scale_markdown(results: dict) -> str:
    """Measured bytes/parameter per stage, dtype and model; the fits and their 8B/70B projections."""
    rows = results["rows"]
    lines = ["# Memory per parameter of each stage, random LLaMA shapes (CPU, peak RSS)", "",
             f"Machine: {results['machine']}. Source: {memory_sources(results)}. Every row is one "
             "`lorashear` child process at a tiny budget (micro-batch sequences × tokens; no knowledge analysis; one "
             "compute thread), "
             "its peak RSS minus that of an import-only child (`python -c \"" + IMPORT_ONLY + "\"`), over the "
             "dense model's parameters; `MALLOC_MMAP_THRESHOLD_=65536`. Target: ≤ "
             f"{MEMORY_TARGET} bytes/parameter in bfloat16 (8B in 24 GB); **bold** rows exceed it.", "",
             "## Measured", "",
             "| stage | model | params | budget | dtype | loaded as | peak MB | import-only MB | bytes/param | "
             "wall s | command |", "|---|---|---:|---|---|---|---:|---:|---:|---:|---|"]
    order = {s: i for i, s in enumerate(MEMORY_STAGES)}
    for row in sorted(rows.values(), key=lambda r: (order[r["stage"]], r["params"], r["vocab"], r["tokens"],
                                                   r["dtype"])):
        value = f"{row['bytes_per_param']:.2f}"
        value = f"**{value}**" if row["bytes_per_param"] > MEMORY_TARGET else value
        lines.append(f"| {row['stage']} | {row['size']} v{row['vocab']:,} | {row['params'] / 1e6:,.0f}M | "
                     f"{row['budget']} | {row['dtype']} | {row['loaded_as']} | {row['peak_mb']:,} | "
                     f"{row['import_mb']:,} | {value} | {row['seconds']:,} | `{command_text(row['command'])}` |")
    failures = results.get("failures", {})
    if failures:
        lines += ["", "Failed (not in the fit): " + "; ".join(f"{key}: {error}" for key, error in failures.items())]
    lines += ["", "## Fitted and projected", "",
              "Projected, not measured: per stage and dtype, least squares over the rows above of bytes above "
              "import-only ≈ a·params + b·(tokens·layers·hidden) + c·(tokens·vocab), tokens = one micro-batch. "
              "A term is fitted only where the rows vary it (activations: two token counts; logits: also two "
              "vocabularies), so a stage measured at one budget projects its weights' term alone and misses the "
              "activations of the recipe's larger micro-batch; "
              "the projections use the recipes' micro-batches (calibration and training 4 × 256 tokens, eval 4 "
              "× 512; analyze none) on Llama-3-8B (8.0B, vocab 128,256, untied) and Llama-3-70B (70.6B). Host "
              "RAM on a CPU; on a GPU the weights and activations would sit in GPU memory instead.", "",
              "| stage | dtype | rows | terms fitted | a bytes/param | b bytes/(token·layer·hidden) | "
              "c bytes/(token·vocab) | max residual GB | 8B GB | 8B bytes/param | 70B GB | fits 24 / 40 / 80 GB (8B) |",
              "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for key, result in results.get("fit", {}).items():
        stage, dtype = key.split()
        coef, eight, seventy = result["coef"], result["projected"]["Llama-3-8B"], result["projected"]["Llama-3-70B"]
        # the fit's terms in memory_scale.py's order (params, activations, logits), as its coefficients are saved
        a, b, c = (f"{coef[t]:.{d}f}" if t in result["terms"] else "—" for t, d in zip(coef, (2, 1, 1), strict=True))
        verdict = " / ".join("yes" if eight["gb"] <= card else "no" for card in (24, 40, 80))
        lines.append(f"| {stage} | {dtype} | {result['rows']} | {', '.join(result['terms'])} | {a} | {b} | {c} | "
                     f"{result['max_residual_gb']:.2f} | {eight['gb']} | {eight['bytes_per_param']} | "
                     f"{seventy['gb']} | {verdict} |")
    if not results.get("fit"):
        lines.append("| (no stage has enough rows to fit yet) |||||||||||")
    return "\n".join(lines) + "\n"


def memory_sources(results: dict) -> str:
    """The commits the rows were measured at (each row records its own; older rows only the last run's)."""
    found = [row.get("source", results.get("source", "not recorded")) for row in results["rows"].values()]
    return ", ".join(dict.fromkeys(found)) or results.get("source", "not recorded")


# ---------------------------------------------------------------------------------------------- dtype_quality.py


def relative_difference(results: dict) -> dict[str, float]:
    """Each dtype's wiki PPL relative to float32's: (ppl − ppl_fp32) / ppl_fp32 (float32 itself left out)."""
    rows = results["rows"]
    if "float32" not in rows:
        return {}
    base = rows["float32"]["ppl"]
    return {dtype: (row["ppl"] - base) / base for dtype, row in rows.items() if dtype != "float32"}


def dtype_quality_markdown(results: dict) -> str:
    lines = [f"# {results['model']} in float32 and in lower precision", "",
             f"Command: `{command_text(results['command'])}`. Machine: {results['machine']}. Wiki perplexity on the "
             f"first {results['ppl_windows']} windows of 512 tokens (BOS + 511 text tokens); seconds are the whole "
             "evaluation (load included) on this CPU, where bfloat16 has no native matmul and runs far slower.", "",
             "| dtype | wiki PPL | vs float32 | seconds |", "|---|---:|---:|---:|"]
    differences = relative_difference(results)
    for dtype, row in results["rows"].items():
        versus = "reference" if dtype == "float32" else f"{100 * differences[dtype]:+.3f}%"
        lines.append(f"| {dtype} | {row['ppl']:.3f} | {versus} | {row['seconds']:,.0f} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- recovery.py


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def window_convention(results: dict) -> str:
    """What a perplexity window held: the BOS token and 511 text tokens, or (older runs) text only."""
    bos = results["dense"]["settings"]["ppl"]["wiki"].get("bos")
    if bos is None:
        return ("each 512 text tokens without a BOS token (measured before the BOS convention; "
                "re-measured when this benchmark is re-run)")
    return f"each the BOS token {bos} and 511 text tokens"


def random_pruned(results: dict) -> bool:
    """Whether the recovered model is recovery.py's own random prune (not a given `--pruned` folder)."""
    return results["pruning"].get("note") == RANDOM_PRUNING_NOTE


def pruned_by(results: dict) -> str:
    """How the recovered model was pruned: random groups (recovery.py's own prune) or a given folder's method."""
    return "random structured pruning" if random_pruned(results) else results["pruning"].get("note", "a given folder")


def average_without_boolq(ev: dict) -> float:
    """An evaluation's task average without boolq, each task by its average's metric (at few documents boolq's
    majority answer lifts damaged models; the other six tasks rank rows, as in the methods and importance tables)."""
    return average_without({"tasks": {task: scores[ev["avg_metric"][task]] for task, scores in ev["tasks"].items()}})


def other_splits(results: dict) -> str:
    """The variants that split the budget otherwise (e.g. dynamic-stage1: all pretraining-like text)."""
    splits = [f"; {name}: {v['overrides']['stage_split']:.0%} pretraining-like text"
              for name, v in results["variants"].items() if "stage_split" in v["overrides"]]
    return "".join(splits)


def recovery_markdown(results: dict) -> str:
    s = results["settings"]
    lines = [
        f"# Recovery benchmark: {results['model']} pruned {results['ratio']:.0%} ({pruned_by(results)})",
        "",
        f"Command: `{command_text(results['command'])}`  ",
        f"Pruning: `{command_text(results['pruning']['command'])}` — {results['pruning']['note']}.  ",
        f"Parameters: dense {results['parameters']['dense']:,}, pruned {results['parameters']['pruned']:,}  ",
        f"Budget: {s['tokens']:,} training tokens per recovery run (half pretraining-like text, half "
        f"instructions{other_splits(results)}), seq-len {s['seq_len']}, batch {s['batch_size']} × grad-accum {s['grad_accum']}, lr {s['lr']}, "
        f"mixture update every {s['mix_interval']} steps.  ",
        f"Machine: {results['machine']}; load average at start {results['load_average_start'][0]:.2f}"
        + (f", at end {results['load_average_end'][0]:.2f}" if "load_average_end" in results else "")
        + " (shared: wall times are noisy).",
        "",
        f"PPL: wiki corpus (exllamav2 `wiki.utf8`, not WikiText-2), {s['ppl_windows']} windows × 512 tokens, "
        f"{window_convention(results)}. "
        f"Zero-shot: first {s['limit']} docs of each task; avg = mean of acc_norm (acc for boolq, winogrande), in %.",
        "",
    ]
    pruned = results.get("pruned")
    tasks = list(pruned["tasks"]) if pruned else []
    lines += [
        "| model | train tokens | train s | eval s | wiki PPL | avg | avg without boolq | " + " | ".join(tasks) + " |",
        "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(tasks),
    ]
    def row(label: str, ev: dict, tokens: str = "", seconds: str = "") -> str:
        cells = [_pct(ev["tasks"][t][ev["avg_metric"][t]]) for t in tasks]
        return (f"| {label} | {tokens} | {seconds} | {ev['eval_seconds']} | {ev['ppl']['wiki']:.2f} | "
                f"{_pct(ev['avg'])} | {_pct(average_without_boolq(ev))} | " + " | ".join(cells) + " |")

    lines.append(row("dense (reference)", results["dense"]))
    if pruned:
        lines.append(row("pruned, no recovery", pruned, "0"))
    for name, v in results["variants"].items():
        lines.append(row(f"recovered: {name}", v["evaluate"], f"{v['tokens_seen']:,}", str(v["train_seconds"])))

    def cell(losses: dict, stage: str) -> str:
        return f"{losses[stage]['mean']:.4f}" if stage in losses else "-"

    if results["variants"]:
        lines += ["", "Held-out loss per data category (nats/token, mean over categories; from the recovery logs):",
                  "", "| model | stage-1 (pretraining-like) | stage-2 (instructions) |", "|---|---:|---:|"]
        first = next(iter(results["variants"].values()))
        lines.append(f"| dense | {cell(first['dense_held_out_loss'], 'pretrain')} | "
                     f"{cell(first['dense_held_out_loss'], 'instruct')} |")
        lines.append(f"| pruned (stage 2: after stage 1) | {cell(first['held_out_loss_before'], 'pretrain')} | "
                     f"{cell(first['held_out_loss_before'], 'instruct')} |")
        for name, v in results["variants"].items():
            after = v["held_out_loss_after"]
            lines.append(f"| recovered: {name} | {cell(after, 'pretrain')} | {cell(after, 'instruct')} |")
        lines += ["", "Final mixture weights (dynamic variants):", ""]
        for name, v in results["variants"].items():
            if v["overrides"]["mix"] == "dynamic":
                for stage, weights in v["final_weights"].items():
                    shown = ", ".join(f"{k} {w:.3f}" for k, w in weights.items())
                    lines.append(f"- {name} / {stage} ({v['mixture_updates'][stage]} updates): {shown}")
    if "seconds" in results:
        lines += ["", wall_time_line(results)]
    for name, v in results["variants"].items():
        if "command" in v:
            lines += ["", f"{name} was run by `{command_text(v['command'])}` on the same pruned folder, alongside the "
                      "first command (so both ran slower)."]
    lines += ["", *recovery_reading(results)]
    return "\n".join(lines) + "\n"


def wall_time_line(results: dict) -> str:
    """The first command's wall time; a resumed run's is summed over its invocations (a variant stopped
    midway restarts, so only its finished attempt counts)."""
    n = results.get("invocations", 1)
    over = f" (summed over {n} invocations)" if n > 1 else ""
    return f"Wall time of the first command: {results['seconds']} s{over}."


def recovery_reading(results: dict) -> list[str]:
    """What the figures say, computed from them, with the caveats of the setting."""
    pruned, variants = results.get("pruned"), results["variants"]
    if not pruned or not variants:
        return []
    best = min(variants, key=lambda n: variants[n]["evaluate"]["ppl"]["wiki"])
    limit = results["settings"]["limit"]
    noise = 100 * (0.25 / limit) ** 0.5  # binomial std of one task's accuracy at p = 0.5, in points
    return [
        f"Reading: wiki PPL goes from {results['dense']['ppl']['wiki']:.2f} (dense) to "
        f"{pruned['ppl']['wiki']:.2f} (pruned); the best recovered model ({best}, "
        f"{variants[best]['tokens_seen']:,} training tokens) has {variants[best]['evaluate']['ppl']['wiki']:.2f}. "
        + ("Random pruning damages the model far more than an importance-based method would, and this budget "
           if random_pruned(results) else f"The pruned folder: {pruned_by(results)}. This budget ")
        + f"is thousands of times smaller than the paper's, so the figures show the direction of recovery and "
        f"the relative cost of the variants at this budget. With {limit} docs per task one task's "
        f"accuracy has a standard error of about {noise:.0f} points (about {noise / 7 ** 0.5:.1f} on the "
        f"seven-task average), so task differences below that are noise.",
    ]


# ---------------------------------------------------------------------------------------------- dense_baseline.py


def dense_markdown(results: dict) -> str:
    """The published report of a results JSON object."""
    result = EvalResult.from_dict(results)
    by_command: dict[str, list[str]] = {}
    for part, run in dense_parts(results["settings"]).items():
        by_command.setdefault(f"`{command_text(run['command'])}` ({run['wall_seconds']} s)", []).append(part)
    commands = "; ".join(f"{', '.join(parts)}: {command}" for command, parts in by_command.items())
    return f"# Dense baseline: {result.model}\n\n{result.to_markdown()}\nCommands: {commands}\n"


# ---------------------------------------------------------------------------------------------- speed.py


def speed_markdown(results: dict) -> str:
    """The published report: the command, then the comparison's table, machine and warnings."""
    comparison = SpeedComparison.from_dict(results["comparison"])
    return (f"# Speed: {results['model']}, dense vs pruned (uniform random plans)\n\n"
            f"Command: `{command_text(results['command'])}`\n\n{comparison.to_markdown()}")


# ---------------------------------------------------------------------------------------------- gguf_speed.py


def gguf_speed_markdown(results: dict) -> str:
    lines = [f"# llama.cpp speed of {results['model']} GGUF exports, dense vs pruned", "",
             f"Command: `{command_text(results['command'])}`",
             *(f"Then: `{command_text(c)}`" for c in results.get("more_commands", [])), "",
             f"llama-cpp-python {results['llama_cpp']}; prefill {GGUF_PREFILL} tokens, greedy decode {GGUF_DECODE} new "
             "tokens, batch 1. Pruned rows were timed alternating with the dense file of their format; ratios "
             "are median (min–max) over rounds.", "",
             "| row | GGUF arch | params | file MB | prefill tok/s | decode tok/s | prefill × dense | decode × dense | machine |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]

    def ratio(row: dict, metric: str) -> str:
        s = row["speed"].get(f"{metric}_vs_dense")
        return "—" if s is None else f"{s['median']:.2f}× ({s['min']:.2f}–{s['max']:.2f})"

    for key, row in results["rows"].items():
        speed = row["speed"]
        repacking = "" if row.get("repack", True) else "; weights not repacked (--no-repack)"  # earlier rows: on
        lines.append(f"| {key} | {row['arch']} | {row['params']:,} | {row['file_mb']:.0f} | "
                     f"{speed['prefill']['median']:.0f} | {speed['decode']['median']:.1f} | {ratio(row, 'prefill')} | "
                     f"{ratio(row, 'decode')} | {row['machine']}{repacking} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- BENCHMARKS.md

# The script that writes a results file -> the Markdown of its table.
TABLES: dict[str, Callable[[dict], str]] = {
    "methods": methods_markdown, "importance": importance_markdown, "prune_cost": prune_cost_markdown,
    "memory_scale": memory_scale_markdown, "dtype_quality": dtype_quality_markdown, "recovery": recovery_markdown,
    "dense_baseline": dense_markdown, "speed": speed_markdown, "gguf_speed": gguf_speed_markdown,
}
# (results stem, the script that writes it, what the table answers), in reading order
SECTIONS = (
    ("methods_smollm2", "methods", "Every method side by side at 20% and 50%, before and after the same recovery"),
    ("importance_smollm2", "importance", "One-shot criteria and knowledge rules, no recovery"),
    ("prune_cost_smollm2", "prune_cost", "Peak memory and time of the gradient-based pruners (Taylor, LoRAPrune, LHSPG)"),
    ("memory_scale", "memory_scale", "Bytes per parameter of every stage on random LLaMA shapes (0.1-0.9B, fp32 and "
     "bf16), fitted and projected to 8B and 70B: does an 8B model fit a 24 GB card?"),
    ("dtype_quality", "dtype_quality", "The default model in float32 and in bfloat16: does a low-precision run score "
     "what a float32 run scores?"),
    ("recovery_smollm2_lhspg", "recovery", "Recovery variants (dynamic vs uniform mix, distillation) on an LHSPG-pruned "
     "model: where the mix can show (random plans drowned the comparison in noise)"),
    ("recovery_smollm2_300k", "recovery", "Three times the recovery tokens (300K, dynamic mix, the recipe's settings) on "
     "the best 20% pruned folder (LHSPG with Wanda-SP saliency): how far more recovery goes toward 1.5× dense"),
    ("recovery_smollm2", "recovery", "Recovery variants (dynamic vs uniform mix, distillation) on one random-pruned model"),
    ("dense_smollm2", "dense_baseline", "The dense model every table compares against"),
    ("speed_smollm2", "speed", "Speed of exported folders in PyTorch, dense vs pruned"),
    ("gguf_speed_smollm2", "gguf_speed", "Speed of the same models in llama.cpp (GGUF)"),
)


def command_of(results: dict) -> str:
    """The command(s) that produced a results file (the dense baseline records one per part)."""
    if "command" in results:
        return f"`{command_text(results['command'])}`"
    parts = results.get("settings", {}).get("parts", {})
    return "; ".join(f"{part}: `{command_text(run['command'])}`" for part, run in parts.items()) or "not recorded"


def hardware_of(results: dict) -> str:
    """Where the results file says it ran (the scripts record it in different places)."""
    if isinstance(results.get("machine"), str):
        return results["machine"]
    machine = results.get("comparison", {}).get("machine") or results.get("speed", {}).get("machine")
    if machine:
        return Machine.from_dict(machine).describe()
    rows = [row["machine"] for row in results.get("rows", {}).values() if "machine" in row]
    return "; ".join(dict.fromkeys(rows)) or "not recorded in its JSON"


# ---------------------------------------------------------------------------------------------- README

README = ROOT / "README.md"
HEADLINE_BEGIN = "<!-- headline: generated by benchmarks/render.py from benchmarks/results/methods_smollm2.json -->"
HEADLINE_END = "<!-- /headline -->"
# The README's rows: (method row, what it is, its paper) — ours first, then the baselines we are measured against.
HEADLINE_ROWS = (
    ("lhspg-auto-m64", "LoRAShear's LHSPG, our default recipe (Taylor saliency, widths a multiple of 64) + recovery",
     "Chen et al. 2023"),
    ("lhspg-auto", "LoRAShear's LHSPG (Taylor saliency) + recovery", "Chen et al. 2023"),
    ("lhspg-wanda-sp", "LoRAShear's LHSPG (Wanda-SP saliency) + recovery", "Chen et al. 2023"),
    ("loraprune-fixed", "LoRAPrune + recovery", "Zhang et al. 2024"),
    ("wanda-sp-auto-150k", "Wanda-SP, one shot + recovery on 149K tokens (equal total tokens)",
     "Sun et al. 2023, structured by An et al. 2024"),
    ("wanda-sp-auto", "Wanda-SP, one shot + recovery", "Sun et al. 2023, structured by An et al. 2024"),
    ("taylor-auto-150k", "LLM-Pruner's Taylor, one shot + recovery on 149K tokens (equal total tokens)", "Ma et al. 2023"),
    ("taylor-auto", "LLM-Pruner's Taylor, one shot + recovery", "Ma et al. 2023"),
    ("flap", "FLAP + recovery", "An et al. 2024"),
    ("torch-pruning", "Torch-Pruning (its LLM pruner) + recovery", "Fang et al. 2023"),
    ("random", "random groups + recovery (the floor)", ""),
)


def headline_markdown(results: dict) -> str:
    """The README's results table: wiki PPL (pruned → recovered) and the six-task average without boolq after
    recovery, at 20% and 50% of the parameters removed; a row run with several seeds shows their mean ± sd."""
    results = methods_results(results)
    dense = results["rows"].get("dense", {})
    by_name: dict[tuple[str, str], list[dict]] = {}
    for key, row in results["rows"].items():
        if key != "dense":
            ratio, name, _ = split_method_key(key)
            by_name.setdefault((ratio, name), []).append(row)

    def cells(ratio: str, name: str) -> list[str]:
        rows = [row for row in by_name.get((ratio, name), []) if "run" in row] or [{}]
        ppl = [mean_sd([row.get(m, {}).get("ppl", {}).get("ppl") for row in rows]) for m in SCORED_MODELS]
        avg = mean_sd([average_without(row.get("recovered", {}).get("tasks")) for row in rows], 100)
        return [" → ".join(ppl) if all(ppl) else "pending", avg or "pending"]

    lines = [f"{results['model']} (`benchmarks/methods.py`; every row's recovery is the same, on 100K tokens; the trained "
             f"methods also train while pruning, on 49K, and the one-shot rows marked 149K recover on those 49K + 100K; "
             f"details and every other row: BENCHMARKS.md, docs/results.md). Dense: wiki PPL "
             f"{fmt(dense.get('ppl', {}).get('ppl'))}, six-task average {fmt(average_without(dense.get('tasks')), 100)} "
             f"(first {results['limit']} documents per task, boolq left out).", "",
             "| method | paper | 20%: wiki PPL pruned → recovered | 20%: 6-task avg | "
             "50%: wiki PPL pruned → recovered | 50%: 6-task avg |", "|---|---|---:|---:|---:|---:|"]
    for name, what, paper in HEADLINE_ROWS:
        lines.append(f"| {what} | {paper} | {' | '.join(cells('20%', name) + cells('50%', name))} |")
    return "\n".join(lines) + "\n"


def readme_with_headline(readme: str, table: str) -> str:
    """`readme` with the text between the headline markers replaced by `table`."""
    begin, end = readme.index(HEADLINE_BEGIN) + len(HEADLINE_BEGIN), readme.index(HEADLINE_END)
    return f"{readme[:begin]}\n{table}{readme[end:]}"


def headline() -> str:
    path = RESULTS / "methods_smollm2.json"
    return headline_markdown(json.loads(path.read_text()) if path.is_file() else None)


def demoted(markdown: str) -> str:
    """Headings one level down, so BENCHMARKS.md keeps one title."""
    return "\n".join(f"#{line}" if line.startswith("#") else line for line in markdown.splitlines())


def section(stem: str, script: str, what: str) -> str:
    """The script's table under its own title, with what it answers, its command and its hardware."""
    path = RESULTS / f"{stem}.json"
    results = json.loads(path.read_text()) if path.is_file() else None
    if script == "methods":
        results = methods_results(results)
    if results is None:
        return f"## {what}\n\nPending: `benchmarks/results/{stem}.json` has not been written yet.\n"
    title, _, body = demoted(TABLES[script](results)).partition("\n")
    return (f"{title}\n\n*{what}.* Produced by: {command_of(results)} → `benchmarks/results/{stem}.json`. "
            f"Hardware: {hardware_of(results)}.\n{body.rstrip()}\n")


def render() -> str:
    """BENCHMARKS.md's text from the committed results."""
    head = ["# Benchmarks", "",
            "Every table below is rendered by `PYTHONPATH=src python benchmarks/render.py` from the "
            "results JSON its section names; each section says which command measured it and on what hardware. "
            "The machines so far are shared CPUs (wall times and absolute tok/s carry their load; speed ratios are "
            "taken alternating in one window). Empty cells and `pending` rows are not measured yet.", ""]
    return "\n".join(head) + "\n".join(f"\n{section(*entry)}" for entry in SECTIONS)


def write() -> None:
    """BENCHMARKS.md and the README beside it (its headline table) from the results as they are now (every
    benchmark's `write_results` calls this); a BENCHMARKS.md written elsewhere (a test's) has no README beside it."""
    readme = OUTPUT.with_name(README.name)
    outputs = [(OUTPUT, render())]
    if readme.is_file():
        outputs.append((readme, readme_with_headline(readme.read_text(), headline())))
    for path, text in outputs:
        staging = path.with_suffix(".md.partial")
        staging.write_text(text)
        staging.replace(path)


def write_results(name: str, data: dict, markdown: str) -> None:
    """benchmarks/results/NAME.json and NAME.md, each written to a temp file and renamed; then BENCHMARKS.md,
    which gathers every table, again."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(data, indent=2)), (".md", markdown)):
        with tempfile.NamedTemporaryFile("w", dir=RESULTS, prefix=f".{name}", delete=False) as f:
            f.write(text)
        Path(f.name).replace(RESULTS / f"{name}{suffix}")
    print(f"wrote {RESULTS / name}.json and .md")
    write()


def rerender_results() -> list[str]:
    """Each section's own benchmarks/results/STEM.md again from its JSON (after a table's Markdown changed)."""
    written = []
    for stem, script, _ in SECTIONS:
        path = RESULTS / f"{stem}.json"
        if path.is_file():
            path.with_suffix(".md").write_text(TABLES[script](json.loads(path.read_text())))
            written.append(path.with_suffix(".md").name)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-md", action="store_true",
                        help="also rewrite each results/STEM.md from its JSON (after a table's Markdown changed)")
    if parser.parse_args().results_md:
        print(f"rewrote {', '.join(rerender_results())}")
    write()
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
