"""How long an evaluation will take, said before it starts.

Each stage is counted in tokens the model must read (perplexity windows; per task, documents ×
requests per document × tokens per request; the speed test's prompts and decode steps) and
divided by the model's forward speed, measured on one batch. A rough figure: lm-eval pads its
batches and adds its own overhead, so real runs are slower, never much faster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from lorashear.models import input_device


@dataclass(frozen=True)
class TaskSize:
    """One zero-shot task as lm-eval runs it (default tokenizer)."""

    documents: int  # in the split lm-eval scores
    requests_per_doc: float  # one loglikelihood request per answer choice
    tokens_per_request: int  # mean context + continuation tokens


# Measured once with `PYTHONPATH=src python benchmarks/task_sizes.py`.
TASK_SIZES: dict[str, TaskSize] = {
    "boolq": TaskSize(3270, 2.0, 146),
    "piqa": TaskSize(1838, 2.0, 36),
    "hellaswag": TaskSize(10042, 4.0, 79),
    "winogrande": TaskSize(1267, 2.0, 22),
    "arc_easy": TaskSize(2376, 4.0, 32),
    "arc_challenge": TaskSize(1172, 4.0, 37),
    "openbookqa": TaskSize(500, 4.0, 15),
}
# The speed test: 4 prefills of 512 tokens and 4 × 128 greedy decode steps; one decode step costs
# about 25 prefill tokens on a CPU (README: 404 vs 16.4 tok/s), far less on a GPU: an upper bound.
SPEED_TOKENS = 4 * 512 + 4 * 128 * 25
LONG_RUN_SECONDS = 600.0  # above this, the plan comes with a note on how to shorten it


PPL, TASK, SPEED = "ppl", "task", "speed"


@dataclass(frozen=True)
class EvalStep:
    """One step of an evaluation: a perplexity corpus, a task or the speed test, and how much it reads."""

    kind: str  # PPL | TASK | SPEED
    key: str  # the corpus or task name ("speed" for the speed test)
    detail: str
    tokens: int

    @property
    def name(self) -> str:
        return f"ppl {self.key}" if self.kind == PPL else self.key


def plan_steps(
    corpora: tuple[str, ...], windows: int, seq_len: int, tasks: tuple[str, ...], limit: int | None, speed: bool
) -> list[EvalStep]:
    """The stages of an evaluation, in the order they run."""
    stages = [EvalStep(PPL, c, f"{windows} windows × {seq_len} tokens", windows * seq_len) for c in corpora]
    for task in tasks:
        size = TASK_SIZES[task]
        docs = size.documents if limit is None else min(limit, size.documents)
        requests = round(docs * size.requests_per_doc)
        stages.append(EvalStep(TASK, task, f"{docs:,} documents, {requests:,} requests",
                            requests * size.tokens_per_request))
    if speed:
        stages.append(EvalStep(SPEED, "speed", "prefill and decode timing", SPEED_TOKENS))
    return stages


@torch.no_grad()
def forward_tokens_per_s(model, batch_size: int, length: int = 128) -> float:
    """Tokens per second of one forward pass over a [batch_size, length] batch of token ids."""
    device = input_device(model)
    vocab = int(getattr(model.config, "vocab_size", 2) or 2)
    ids = torch.randint(0, vocab, (batch_size, length), generator=torch.Generator().manual_seed(0)).to(device)
    start = time.perf_counter()
    model(input_ids=ids, use_cache=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return batch_size * length / max(time.perf_counter() - start, 1e-9)


def duration(seconds: float) -> str:
    """A human duration: "40 s", "12 min", "3.5 h", "2.1 days"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
