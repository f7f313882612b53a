"""The evaluation result: one dataclass, written as one JSON object and a markdown table."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lorashear.evaluate.perplexity import PerplexityResult
from lorashear.evaluate.speed import SpeedResult, machine_notes
from lorashear.evaluate.zeroshot import AVERAGE_METRIC, TaskScore, average, average_rule_text
from lorashear.io import write_atomic


def cell(text: str) -> str:
    """Text for a markdown table cell: pipes (a BOS token such as <|im_start|> has two) escaped."""
    return text.replace("|", "\\|")


@dataclass
class EvalResult:
    """Everything one evaluation measured, with the settings that produced it."""

    model: str
    params: int
    ppl: dict[str, PerplexityResult] = field(default_factory=dict)
    tasks: dict[str, TaskScore] = field(default_factory=dict)
    speed: SpeedResult | None = None
    settings: dict = field(default_factory=dict)

    @property
    def avg(self) -> float | None:
        return average(self.tasks)

    def to_dict(self) -> dict:
        """The JSON object: model, params, ppl {corpus: value}, tasks, avg, speed, settings."""
        return {
            "model": self.model,
            "params": self.params,
            "ppl": {name: r.ppl for name, r in self.ppl.items()},
            "tasks": {name: asdict(score) for name, score in self.tasks.items()},
            "avg": self.avg,
            "avg_metric": {task: AVERAGE_METRIC[task] for task in self.tasks},
            "speed": self.speed.to_dict() if self.speed is not None else None,
            "settings": {
                **self.settings,
                "ppl": {name: {k: v for k, v in asdict(r).items() if k != "ppl"} for name, r in self.ppl.items()},
            },
        }

    @classmethod
    def from_dict(cls, d: dict) -> EvalResult:
        """The result a `to_dict` object describes (PPL figures of old files, without `bos`, had none)."""
        settings = dict(d.get("settings", {}))
        ppl_settings = settings.pop("ppl", {})
        return cls(
            model=d["model"],
            params=d["params"],
            ppl={name: PerplexityResult(ppl=value, **ppl_settings[name]) for name, value in d["ppl"].items()},
            tasks={name: TaskScore(**score) for name, score in d["tasks"].items()},
            speed=SpeedResult.from_dict(d["speed"]) if d.get("speed") else None,
            settings=settings,
        )

    def to_markdown(self) -> str:
        """Markdown tables (perplexity, zero-shot, speed), each figure labelled with what it is."""
        lines = [f"**{self.model}** — {self.params:,} parameters", ""]
        if self.ppl:
            lines += ["| corpus | PPL | windows × tokens |", "|---|---:|---|"]
            lines += [f"| {r.corpus} | {r.ppl:.3f} | {cell(r.describe())} |" for r in self.ppl.values()]
            lines.append("")
        if self.tasks:
            lines += ["| task | acc | acc_norm | n | avg uses |", "|---|---:|---:|---:|---|"]
            for task, s in self.tasks.items():
                lines.append(f"| {task} | {100 * s.acc:.2f} | {100 * s.acc_norm:.2f} | {s.n} | {AVERAGE_METRIC[task]} |")
            lines.append(f"| **avg** | | | | **{100 * self.avg:.2f}** |")
            lines += ["", average_rule_text() + " (as LLM-Pruner reports)", ""]
        if self.speed is not None:
            s = self.speed
            lines += [
                f"| speed ({s.device}; absolute, single model: median of {s.repeats} after a warm-up) | value |",
                "|---|---:|",
                f"| prefill tok/s ({s.prefill_tokens} tokens, batch 1) | {s.prefill_tokens_per_s:.1f} |",
                f"| decode tok/s (greedy, {s.decode_tokens} new, batch 1) | {s.decode_tokens_per_s:.1f} |",
                f"| peak memory MiB ({s.memory_measure}) | {s.peak_memory_bytes / 2**20:.1f} |",
                f"| parameters | {s.params:,} |",
                f"| MACs/token, linear layers | {s.linear_macs_per_token:,} |",
                f"| MACs/token, + attention at context {s.macs_context} | {s.macs_per_token:,} |",
                "",
                *machine_notes(s.machine, s.warnings),
                "To compare models, time them together: `lorashear eval A B --speed`.",
                "",
            ]
        return "\n".join(lines)


def write_json(result: EvalResult, path: str | Path) -> Path:
    """Write the result as one JSON object."""
    return write_atomic(path, json.dumps(result.to_dict(), indent=2) + "\n")
