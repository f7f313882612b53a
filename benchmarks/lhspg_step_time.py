"""Time of LHSPG's hook steps on the default model next to one plain LoRA training step (issue 10's ≤ 10% goal).

    PYTHONPATH=src python benchmarks/lhspg_step_time.py [--model smollm2-135m] [--ratio 0.2] [--steps 3]
                                                       [--threads N] [--profile OUT.prof] [--out …json]

The hook runs 5 periods of 2 steps, no warm-up, on the LoRA graph of the default kinds (kv_group, mlp_channel):
step 1 starts period 1 (score every group with the `lhspg` saliency, select, project), step 2 ends it (zero,
select period 2, merge), step 3 is a mid-period step (project period 2, keep period 1's zeros). Adam has state
from one step and B is small random, so projections and zeroing do real work. The plain step is forward,
backward and AdamW on one batch of random tokens of the loop's default batch size and sequence length.
`--threads` sets torch's thread count for both: on cores shared with other jobs, a second thread that waits for
a core makes every small op ~40 ms (the hook's many small matmuls suffer most). Writes JSON with each step's
seconds, the process's peak memory after the plain step and after the
hook steps plus one more plain step (what LHSPG adds to LoRA training), the machine's load average and torch's thread count (default out: benchmarks/results/lhspg_step_time.json).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import resource
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from _common import RESULTS

from lorashear.graph import build_graph
from lorashear.graph.structures import DEFAULT_KINDS
from lorashear.models import DEFAULT_MODEL, load_model
from lorashear.prune.api import tied_aliases
from lorashear.prune.lhspg import LhspgConfig, LhspgHook
from lorashear.prune.trained import TrainedConfig
from lorashear.train import add_lora


def plain_step(model, optimizer, config: TrainedConfig) -> float:
    """Seconds of one LoRA fine-tuning step (forward, backward, optimizer) on random tokens."""
    ids = torch.randint(0, model.config.vocab_size, (config.batch_size, config.seq_len))
    start = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return time.perf_counter() - start


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--steps", type=int, default=3, help="hook steps to time (at most 10)")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain LoRA step")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    parser.add_argument("--profile", help="write cProfile stats of the hook steps here")
    parser.add_argument("--out", default=str(RESULTS / "lhspg_step_time.json"))
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = TrainedConfig()
    model = add_lora(load_model(args.model, device="cpu"), config)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 1e-3)  # trained LoRA: projections absorb a non-zero update
    graph = build_graph(model, DEFAULT_KINDS)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    plain = None if args.no_plain else plain_step(model, optimizer, config)  # also gives Adam its state
    if plain is None:
        sum(p.sum() for p in model.parameters() if p.requires_grad).backward()
        optimizer.step()
        optimizer.zero_grad()
    rss_plain = peak_rss_mb()  # model, LoRA, Adam state and one training step's activations
    hook = LhspgHook(LhspgConfig(warmup_share=0.0, periods=5), graph, args.ratio, DEFAULT_KINDS,
                     aliases=tied_aliases(model))
    run = SimpleNamespace(model=model, unwrapped=model, optimizer=optimizer, step=0, total_steps=10)
    hook.on_start(run)
    profiler = cProfile.Profile() if args.profile else None
    steps = []
    for step in range(1, min(args.steps, 10) + 1):
        run.step = step
        record: dict = {}
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        hook.after_step(run, record)
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - start
        steps.append({"step": step, "seconds": round(seconds, 3), "redundant": len(hook.redundant()),
                      "zeroed": sum(record["zeroed"].values())})
        print(json.dumps(steps[-1]), flush=True)
    if profiler:
        profiler.dump_stats(args.profile)
    if plain is not None:  # a training step with the hook's state (its groups' copies, Adam state) alive
        plain_step(model, optimizer, config)
    result = {"command": "python " + " ".join(["benchmarks/lhspg_step_time.py", *(argv or sys.argv[1:])]),
              "model": args.model, "ratio": args.ratio, "groups": len(graph.groups), "plain_step_s": plain,
              "hook_steps": steps,
              "peak_rss_mb": {"plain_step": rss_plain, "with_hook": peak_rss_mb()}, "load_average": os.getloadavg(), "threads": torch.get_num_threads()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)
    return result


if __name__ == "__main__":
    main()
