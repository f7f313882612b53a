"""Bytes per parameter of every pipeline stage on random-weight LLaMA shapes, measured and projected to 8B/70B.

Does a 7-8B model fit one 24 GB card? Each stage (`analyze`, `prune --method taylor`, `prune --method lhspg`,
`recover`, `eval`) runs as the real CLI in its own child process at tiny budgets, on random LLaMA-shaped models
(0.1B to 2B; vocab 49,152 or 128,256) saved once in the requested dtype. A row's figure is the child's peak RSS
(`os.wait4`'s ru_maxrss) minus the peak of an import-only child, over the dense model's parameter count: the
goal is <= 3.0 bytes/parameter for every stage in bfloat16 (8B in 24 GB). Every child runs with
`MALLOC_MMAP_THRESHOLD_=65536`, so freed tensors go back to the system instead of holding the peak up, and
is started by a small process in between (see WAIT4).
A command whose --help has no `--dtype` loads the model in float32 whatever the folder holds; the row says so.

Per stage and dtype, least squares fits peak ≈ a·params + b·(tokens·layers·hidden) + c·(tokens·vocab)
(weights, activations, logits; tokens = one micro-batch) over the measured rows, then projects it to the
Llama-3-8B and Llama-3-70B shapes at the recipes' micro-batches. Rows are saved as they finish; a rerun
skips them (and remeasures a row taken before its command had `--dtype`).

    PYTHONPATH=src python benchmarks/memory_scale.py --workdir /tmp/memory-scale [--sizes 0.1b,0.5b,0.9b]
        [--vocabs 49152] [--dtypes float32,bfloat16] [--stages analyze,taylor,lhspg,recover,eval]
        [--batch 2 --seq-len 64]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _common import IMPORT_ONLY, MEMORY_STAGES, RESULTS, ROOT, command_line, results_lock
from render import memory_scale_markdown, write_results

STEM = "memory_scale"
GB = 1e9


@dataclass(frozen=True)
class Shape:
    """A LLaMA shape (head_dim = hidden / heads); tied embeddings like the small LLaMA-family models."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    tied: bool = True

    def params(self, vocab: int) -> int:
        """Parameter count (tied embeddings counted once; norms included)."""
        head_dim = self.hidden // self.heads
        attention = 2 * self.hidden * self.heads * head_dim + 2 * self.hidden * self.kv_heads * head_dim
        layer = attention + 3 * self.hidden * self.intermediate + 2 * self.hidden
        return self.layers * layer + vocab * self.hidden * (1 if self.tied else 2) + self.hidden


# Nominal sizes at vocab 49,152 (SmolLM2-135M's shape for 0.1b); --vocabs changes the embedding only.
SIZES = {
    "0.1b": Shape(576, 1536, 30, 9, 3),
    "0.5b": Shape(1024, 4096, 28, 16, 8),
    "0.9b": Shape(1536, 6144, 24, 24, 8),
    "2b": Shape(2048, 8192, 30, 32, 8),
}
# The projections' shapes (vocab 128,256, untied) and micro-batch tokens per stage at the recipes' budgets
# (recipes/lorashear-20.yaml, configs/methods/lhspg.yaml: 4 × 256 for calibration and training; eval: 4 windows of 512).
PROJECTED = {"Llama-3-8B": (Shape(4096, 14336, 32, 32, 8, tied=False), 128256),
             "Llama-3-70B": (Shape(8192, 28672, 80, 64, 8, tied=False), 128256)}
RECIPE_TOKENS = {"analyze": 0, "taylor": 4 * 256, "lhspg": 4 * 256, "recover": 4 * 256, "eval": 4 * 512}
EVAL_WINDOW = 512  # tokens per perplexity window (lorashear.evaluate.perplexity)
DTYPES = ("float32", "bfloat16")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
COLUMNS = ("params", "activations", "logits")  # the fit's terms: params, tokens·layers·hidden, tokens·vocab


# ---------------------------------------------------------------------------------------------- models


def build_model(folder: Path, shape: Shape, vocab: int, dtype: str, tokenizer) -> dict:
    """A random-weight LlamaForCausalLM of `shape` saved (safetensors, in `dtype`) with `tokenizer` into
    `folder`, once; returns its facts (params, layers, hidden, vocab, dtype), kept in memory_scale.json."""
    facts_path = folder / "memory_scale.json"
    if facts_path.is_file():
        return json.loads(facts_path.read_text())
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    if len(tokenizer) > vocab:
        raise SystemExit(f"vocab {vocab} is smaller than the tokenizer's {len(tokenizer)} tokens")
    config = LlamaConfig(hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, vocab_size=vocab, tie_word_embeddings=shape.tied,
                         max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype)).eval()  # made in dtype: no fp32 copy
    facts = {"params": sum(p.numel() for p in model.parameters()), "layers": shape.layers,
             "hidden": shape.hidden, "vocab": vocab, "dtype": dtype}
    staging = folder.with_name(folder.name + ".partial")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "memory_scale.json").write_text(json.dumps(facts, indent=2))
    staging.rename(folder)
    return facts


# ---------------------------------------------------------------------------------------------- children


def child_env() -> dict:
    """Every child's environment: freed tensors go back to the system (mmap above 64 KiB), no progress bars, and
    $MEMORY_SCALE_THREADS compute threads (default 1: on a busy machine spinning threads slow a step 10-100x;
    the figures are memory, which the thread count barely moves)."""
    src = str(ROOT / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "MALLOC_MMAP_THRESHOLD_": "65536", "TQDM_DISABLE": "1",
            "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("MEMORY_SCALE_THREADS", "1")}


# Waits for `python ARGV` and writes its exit code and ru_maxrss. It runs as a small process in between: a child
# forked from a large one starts with the parent's RSS as its high-water mark (Linux keeps it across exec), so
# a child of this script, which built the models, would never read below it.
WAIT4 = ("import os, subprocess, sys; child = subprocess.Popen(sys.argv[2:]); _, status, usage = os.wait4(child.pid, 0); "
         "open(sys.argv[1], 'w').write(f'{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}')")


def peak_rss_kib(argv: list[str], log: Path) -> tuple[int, float]:
    """Run `python ARGV` with its output in `log`; its peak RSS (KiB) and wall seconds. Raises on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    measured = log.with_suffix(".rss")
    start = time.time()
    with open(log, "w") as out:
        subprocess.run([sys.executable, "-S", "-c", WAIT4, str(measured), sys.executable, *argv], env=child_env(),
                       stdout=out, stderr=subprocess.STDOUT, check=True)
    code, peak = map(int, measured.read_text().split())
    if code != 0:
        tail = "".join(collections.deque(log.read_text(errors="replace").splitlines(True), maxlen=15))
        raise RuntimeError(f"exit {code} (see {log}):\n{tail}")
    return peak, time.time() - start


def cli_flags(command: str) -> set[str]:
    """The long options `lorashear COMMAND --help` lists."""
    text = subprocess.run([sys.executable, "-m", "lorashear", command, "--help"], env=child_env(),
                          capture_output=True, text=True, check=True).stdout
    return {word.rstrip(",=") for word in text.split() if word.startswith("--")}


@dataclass(frozen=True)
class Budget:
    """A stage's tiny budget: sequences per micro-batch and tokens per sequence."""

    batch: int = 2
    seq_len: int = 64

    @property
    def label(self) -> str:
        return f"{self.batch}x{self.seq_len}"

    def tokens(self, stage: str) -> int:
        """Tokens of one forward pass of `stage` (what activations and logits scale with)."""
        if stage == "analyze":
            return 0  # traced with fake tensors
        return self.batch * (EVAL_WINDOW if stage == "eval" else self.seq_len)


def stage_argv(stage: str, model: Path, out: Path, budget: Budget, dense: Path) -> list[str]:
    """`lorashear …` arguments of a stage (besides --dtype): tiny budgets, no knowledge analysis."""
    batch = ["--batch-size", str(budget.batch), "--seq-len", str(budget.seq_len)]
    prune = ["prune", str(model), "--ratio", "0.2", "--unprunable", "none", "--calib-samples", str(budget.batch),
             *batch, "-o", str(out), "--overwrite"]
    steps = budget.batch * budget.seq_len
    return {
        "analyze": ["analyze", str(model)],
        "taylor": [*prune, "--method", "taylor"],
        # one period (its saliency pass and projections are the peak), 3 steps: warm-up, the period, the end
        "lhspg": [*prune, "--method", "lhspg", "--periods", "1", "--tokens", str(3 * steps), "--grad-accum", "1",
                  "--checkpoint-every", "0"],
        # one step of stage 1 (dynamic mix: the dense model's reference losses first, on one held-out sequence
        # per category: RECOVER_RECIPE), then merge and export
        "recover": ["recover", str(model), "-o", str(out), "--dense", str(dense), "--config",
                    str(write_recover_recipe(out.parent)), "--tokens", str(steps),
                    "--stage-split", "1", *batch, "--grad-accum", "1", "--mix", "dynamic",
                    "--checkpoint-every", "0"],
        "eval": ["eval", str(model), "--tasks", "none", "--ppl-windows", str(budget.batch), "--batch-size",
                 str(budget.batch)],
    }[stage]


RECOVER_RECIPE = "eval_sequences: 1  # held-out sequences per category for the dynamic mix's losses (default 8)\n"


def write_recover_recipe(folder: Path) -> Path:
    """recover-tiny.yaml in `folder`: recovery's defaults but one held-out sequence per category (no flag sets it)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recover-tiny.yaml"
    path.write_text(RECOVER_RECIPE)
    return path


def row_key(size: str, vocab: int, dtype: str, stage: str, budget: Budget) -> str:
    return f"{size} v{vocab} {dtype} {stage} {budget.label}"


# ---------------------------------------------------------------------------------------------- fit


def design(row: dict) -> list[float]:
    """The fit's terms of a row: params, tokens·layers·hidden, tokens·vocab."""
    return [row["params"], row["tokens"] * row["layers"] * row["hidden"], row["tokens"] * row["vocab"]]


def fit(rows: list[dict]) -> dict | None:
    """Least squares of bytes above import-only on the terms the rows vary: weights always, activations where
    the rows have two token counts or more, logits where they also have two vocabularies (a term left out has
    coefficient 0); None where the rows do not determine them. Coefficients: bytes per parameter / per
    token·layer·hidden / per token·vocab."""
    tokens, vocabs = {r["tokens"] for r in rows}, {r["vocab"] for r in rows}
    used = [0, *([1] if len(tokens - {0}) >= 2 else []), *([2] if len(tokens - {0}) >= 2 and len(vocabs) >= 2 else [])]
    if len(rows) < len(used):
        return None
    x = np.array([design(r) for r in rows], dtype=float)
    y = np.array([r["bytes_above_import"] for r in rows], dtype=float)
    scale = np.linalg.norm(x[:, used], axis=0)  # the columns differ by orders of magnitude
    solution, _, rank, _ = np.linalg.lstsq(x[:, used] / scale, y, rcond=None)
    if rank < len(used):
        return None
    coef = np.zeros(x.shape[1])
    coef[used] = solution / scale
    residual = y - x @ coef
    return {"coef": dict(zip(COLUMNS, coef.tolist(), strict=True)), "terms": [COLUMNS[j] for j in used],
            "rows": len(rows), "max_residual_gb": float(np.abs(residual).max() / GB)}


def project(coef: dict, shape: Shape, vocab: int, tokens: int) -> float:
    """Bytes above import-only the fit predicts for `shape` at `tokens` per micro-batch."""
    row = {"params": shape.params(vocab), "tokens": tokens, "layers": shape.layers, "hidden": shape.hidden,
           "vocab": vocab}
    return float(np.dot([coef[c] for c in COLUMNS], design(row)))


def fits(rows: dict) -> dict:
    """Per 'stage dtype': the fit and its projections (GB and bytes/parameter) at the recipe budgets."""
    groups = collections.defaultdict(list)
    for row in rows.values():
        groups[(row["stage"], row["dtype"])].append(row)
    out = {}
    for stage in MEMORY_STAGES:
        for dtype in DTYPES:
            result = fit(groups.get((stage, dtype), []))
            if result is None:
                continue
            result["projected"] = {}
            for name, (shape, vocab) in PROJECTED.items():
                peak = project(result["coef"], shape, vocab, RECIPE_TOKENS[stage])
                result["projected"][name] = {"gb": round(peak / GB, 1),
                                             "bytes_per_param": round(peak / shape.params(vocab), 2)}
            out[f"{stage} {dtype}"] = result
    return out


# ---------------------------------------------------------------------------------------------- run


def machine_line() -> str:
    import platform

    import torch

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, cpu"


def source_line() -> str:
    """The commit measured, and whether src/ had uncommitted changes (the checkout is shared)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True).stdout
    return f"commit {head.strip() or '?'}" + (" with uncommitted src/ changes" if dirty.strip() else "")


class Runner:
    """Measures rows into results/memory_scale.json, saving after each one."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.workdir = args, args.workdir.resolve()
        path = RESULTS / f"{STEM}.json"
        self.results = json.loads(path.read_text()) if path.is_file() else {"rows": {}}
        self.results.update(command=command_line(),
                            machine=machine_line(), source=source_line())
        self.flags = {command: cli_flags(command) for command in ("analyze", "prune", "recover", "eval")}
        self.import_kib = None
        self.measured: set[str] = set()  # the rows this run measured (kept over the file's when saving)
        self._tokenizer = None

    def tokenizer(self):
        if self._tokenizer is None:
            from lorashear.models import DEFAULT_MODEL, load_tokenizer

            self._tokenizer = load_tokenizer(DEFAULT_MODEL)
        return self._tokenizer

    def dtype_args(self, command: str, dtype: str) -> tuple[list[str], str]:
        """`--dtype DTYPE` where the command has it (and what the model is loaded as)."""
        if "--dtype" in self.flags[command]:
            return ["--dtype", dtype], dtype
        return [], "flag absent: loaded as float32"

    def extra_args(self, stage: str) -> list[str]:
        choice = self.args.gradient_checkpointing
        command = "recover" if stage == "recover" else "prune"
        if choice and stage in ("lhspg", "recover") and "--gradient-checkpointing" in self.flags[command]:
            return ["--gradient-checkpointing", choice]
        return []

    def done(self, key: str, command: str) -> bool:
        """A saved row, unless it was taken without --dtype and the command has the flag now."""
        row = self.results["rows"].get(key)
        return row is not None and not (row["loaded_as"].startswith("flag absent") and "--dtype" in self.flags[command])

    def pruned(self, size: str, vocab: int, dtype: str, budget: Budget) -> Path:
        """The taylor-pruned folder recovery starts from (measured as the taylor row when that is still missing)."""
        folder = self.workdir / "runs" / f"{size}-v{vocab}-{dtype}-{budget.label}" / "taylor"
        if not (folder / "config.json").is_file():
            self.measure(size, vocab, dtype, "taylor", budget)
        if not (folder / "config.json").is_file():  # measured by an earlier run, its folder gone since
            model = self.workdir / "models" / f"{size}-v{vocab}-{dtype}"
            argv = stage_argv("taylor", model, folder, budget, model) + self.dtype_args("prune", dtype)[0]
            peak_rss_kib(["-m", "lorashear", *argv], folder.with_suffix(".log"))
        return folder

    def measure(self, size: str, vocab: int, dtype: str, stage: str, budget: Budget) -> None:
        """One row: the stage's child process, saved at once (skipped when done; a failure is recorded)."""
        key = row_key(size, vocab, dtype, stage, budget)
        command = stage if stage in ("analyze", "recover", "eval") else "prune"
        if self.done(key, command):
            return
        dense = self.workdir / "models" / f"{size}-v{vocab}-{dtype}"
        if not dense.is_dir():
            print(f"[{key}] building {dense} ...", flush=True)
        dense.parent.mkdir(parents=True, exist_ok=True)
        facts = build_model(dense, SIZES[size], vocab, dtype, self.tokenizer())
        model = self.pruned(size, vocab, dtype, budget) if stage == "recover" else dense
        out = model.parent / stage if stage == "recover" else self.workdir / "runs" / f"{dense.name}-{budget.label}" / stage
        if stage == "recover" and out.exists():
            shutil.rmtree(out)  # recover refuses an existing output folder
        dtype_args, loaded_as = self.dtype_args(command, dtype)
        argv = ["-m", "lorashear", *stage_argv(stage, model, out, budget, dense), *dtype_args, *self.extra_args(stage)]
        if self.import_kib is None:  # the better of two: the baseline is subtracted from every row of this run
            self.import_kib = min(peak_rss_kib(["-c", IMPORT_ONLY], self.workdir / "logs" / "import-only.log")[0]
                                  for _ in range(2))
            print(f"import-only peak RSS: {self.import_kib / 1024:,.0f} MB", flush=True)
        print(f"[{key}] lorashear {' '.join(argv[2:])}", flush=True)
        load = os.getloadavg()[0]
        try:
            peak, seconds = peak_rss_kib(argv, self.workdir / "logs" / f"{key.replace(' ', '_')}.log")
        except RuntimeError as err:
            print(f"[{key}] FAILED: {err}", flush=True)
            self.results.setdefault("failures", {})[key] = str(err).splitlines()[0]
            self.save()
            return
        above = (peak - self.import_kib) * 1024
        self.results["rows"][key] = {
            "size": size, "vocab": vocab, "dtype": dtype, "stage": stage, "budget": budget.label,
            "tokens": budget.tokens(stage), "params": facts["params"], "layers": facts["layers"],
            "hidden": facts["hidden"], "loaded_as": loaded_as, "peak_mb": round(peak / 1024),
            "import_mb": round(self.import_kib / 1024), "bytes_above_import": above,
            "bytes_per_param": round(above / facts["params"], 3), "seconds": round(seconds, 1),
            "load_avg": round(load, 1), "source": self.results["source"],
            "command": "lorashear " + " ".join(argv[2:]).replace(str(self.workdir), "WORKDIR")}
        self.measured.add(key)
        self.save()
        print(f"[{key}] {above / facts['params']:.2f} bytes/param (peak {peak / 1024:,.0f} MB, "
              f"{facts['params'] / 1e6:,.0f}M params, {seconds:.0f} s, loaded as {loaded_as})", flush=True)

    def save(self) -> None:
        """Merge this run's rows into the results file (another run may have added rows since) and rewrite it."""
        with results_lock(STEM):
            path = RESULTS / f"{STEM}.json"
            saved = json.loads(path.read_text()) if path.is_file() else {}
            mine = {key: self.results["rows"][key] for key in self.measured}
            self.results["rows"] = {**self.results["rows"], **saved.get("rows", {}), **mine}
            failures = {**saved.get("failures", {}), **self.results.get("failures", {})}
            self.results["failures"] = {k: v for k, v in failures.items() if k not in self.results["rows"]}
            self.results["fit"] = fits(self.results["rows"])
            write_results(STEM, self.results, memory_scale_markdown(self.results))


def split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="models (built once), runs and logs")
    parser.add_argument("--sizes", default="0.1b,0.5b,0.9b", help=f"of: {', '.join(SIZES)}")
    parser.add_argument("--vocabs", default="49152", help="comma-separated vocabulary sizes (>= 49,152)")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="float32, bfloat16 (float16 also works)")
    parser.add_argument("--stages", default=",".join(MEMORY_STAGES), help=f"of: {', '.join(MEMORY_STAGES)}")
    parser.add_argument("--batch", type=int, default=2, help="sequences per micro-batch (eval: 512-token windows)")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--gradient-checkpointing", choices=("auto", "true", "false"),
                        help="passed to lhspg and recover where their --help lists it (default: not passed)")
    args = parser.parse_args()
    unknown = [s for s in split(args.sizes) if s not in SIZES]
    unknown += [s for s in split(args.stages) if s not in MEMORY_STAGES]
    if unknown:
        parser.error(f"unknown sizes or stages: {', '.join(unknown)}")
    runner, budget = Runner(args), Budget(args.batch, args.seq_len)
    for size in split(args.sizes):
        for vocab in map(int, split(args.vocabs)):
            for dtype in split(args.dtypes):
                for stage in split(args.stages):
                    runner.measure(size, vocab, dtype, stage, budget)
    runner.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
