"""The demo recipe: evaluate the default model, prune it, evaluate the pruned folder, compare.

Speed is timed with both models loaded, alternating in one window (`evaluate.speed.compare`), so
the speed-up survives a busy machine; the table shows it as a ratio with its spread over rounds.

Reads top to bottom; every step is a public API call. Until LHSPG lands, the plan is the
`random` baseline (no recovery), so the demo shows the machinery and what pruning costs
before recovery — not the method's final quality.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from lorashear.evaluate import AVERAGE_METRIC, EvalConfig, EvalResult, evaluate_config, write_json
from lorashear.evaluate.files import write_atomic
from lorashear.evaluate.report import cell
from lorashear.evaluate.speed import SpeedComparison, compare, machine_notes
from lorashear.models import DEFAULT_MODEL, load_model, load_tokenizer
from lorashear.prune.api import PruneConfig, prune_model


@dataclass
class DemoConfig:
    """Demo settings: small evaluation sizes so it runs in minutes on a laptop CPU."""

    model: str = DEFAULT_MODEL
    output: str = "runs/demo"
    ratio: float = 0.2
    ppl_windows: int = 32
    limit: int = 30
    speed: bool = True


def comparison_table(dense: EvalResult, pruned: EvalResult, speed: SpeedComparison | None = None) -> str:
    """Dense vs pruned, one row per figure; speed (timed side by side) as a ratio with its spread."""
    rows = [("parameters", f"{dense.params:,}", f"{pruned.params:,}", f"{pruned.params / dense.params:.2f}×")]
    for corpus in dense.ppl:
        rows.append((f"PPL {corpus} ({cell(dense.ppl[corpus].describe())})",
                     f"{dense.ppl[corpus].ppl:.2f}", f"{pruned.ppl[corpus].ppl:.2f}", ""))
    for task in dense.tasks:
        metric = AVERAGE_METRIC[task]
        rows.append((f"{task} {metric} (first {dense.tasks[task].n})",
                     f"{100 * getattr(dense.tasks[task], metric):.1f}",
                     f"{100 * getattr(pruned.tasks[task], metric):.1f}", ""))
    if dense.avg is not None and pruned.avg is not None:
        rows.append(("zero-shot average", f"{100 * dense.avg:.2f}", f"{100 * pruned.avg:.2f}", ""))
    notes = []
    if speed is not None:
        reference, other = speed.models
        for metric, label, digits in (("prefill", f"prefill tok/s ({speed.prefill_tokens} tokens)", 0),
                                      ("decode", f"decode tok/s ({speed.decode_tokens} new)", 1)):
            rows.append((label, f"{reference.rate(metric).median:.{digits}f}", f"{other.rate(metric).median:.{digits}f}",
                         speed.ratio_text(other.name, metric)))
        notes = ["", speed.describe(), "", *machine_notes(speed.machine, speed.warnings)]
    lines = ["| | dense | pruned | pruned / dense |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {a} | {b} | {ratio} |" for name, a, b, ratio in rows]
    return "\n".join(lines + notes).rstrip("\n")


def run_demo(config: DemoConfig, log: Callable[[str], None] = print) -> dict:
    """Dense eval → random prune (uniform) → pruned eval; writes summary.json/.md in `config.output`."""
    out = Path(config.output)
    # Both configs are validated before any model work.
    eval_config = EvalConfig(ppl_windows=config.ppl_windows, limit=config.limit)  # speed: both models together
    pruned_dir = out / "pruned"
    prune_config = PruneConfig(config.model, str(pruned_dir), ratio=config.ratio, uniform=True, overwrite=True)

    log(f"[1/3] evaluating the dense model {config.model}")
    dense_model = load_model(config.model)
    dense = evaluate_config(dense_model, load_tokenizer(config.model), eval_config, model_name=config.model, log=log)

    log(f"[2/3] pruning {config.ratio:.0%} of the parameters (random plan, uniform layers)")
    pruned = prune_model(prune_config, log=log)  # overwrite: the demo replaces its own earlier output

    log(f"[3/3] evaluating the pruned model {pruned.folder}")
    pruned_model = load_model(str(pruned.folder))
    pruned_eval = evaluate_config(pruned_model, load_tokenizer(str(pruned.folder)), eval_config,
                                  model_name=str(pruned.folder), log=log)
    speed = None
    if config.speed:
        log("timing dense and pruned side by side")
        speed = compare({"dense": dense_model, "pruned": pruned_model}, log=log)

    table = comparison_table(dense, pruned_eval, speed)
    write_json(dense, out / "dense.json")
    write_json(pruned_eval, out / "pruned.json")
    summary = {"config": asdict(config), "dense": dense.to_dict(), "pruned": pruned_eval.to_dict(),
               "speed": speed.to_dict() if speed is not None else None,
               "prune_seconds": pruned.seconds, "achieved_ratio": pruned.plan.achieved_ratio}
    write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_atomic(out / "summary.md", f"# lorashear demo\n\n{table}\n")
    log("\n" + table)
    log(f"\nThe pruned model is a Hugging Face folder: {pruned.folder} (random plan, no recovery yet).")
    return summary
