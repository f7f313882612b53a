"""Every stage on a GPU, in bfloat16, at tiny budgets: peak GPU memory per stage, and CPU-vs-CUDA agreement.

Made for one call of the `device` tool (a lent GPU; nothing reachable from it, no lm-eval, datasets or gguf
installed: carry the gguf wheel, see docs/scale.md). Random-weight LLaMA shapes (1B: Llama-3.2-1B's, 8B:
Llama-3-8B's) are built on the GPU and saved in bfloat16; the text is this repository's own Markdown (a BPE
tokenizer of 4,096 tokens is trained on it, so nothing is downloaded). Each stage is the real CLI in its own
child process: `analyze`, `prune --method taylor`, `prune --method lhspg`, `recover`, `eval`; a child reports
`torch.cuda.max_memory_allocated()` (on a CPU: peak RSS) and its wall time. First, on a tiny LLaMA, the same
weights' logits and Taylor scores on the CPU (float32) and on CUDA (float32) are compared.

    PYTHONPATH=src python benchmarks/gpu_smoke.py --workdir /tmp/gpu-smoke [--sizes 1b,8b] [--out DIR]

Writes DIR/gpu_smoke.json and .md (default benchmarks/results/); each finished row is written at once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
STEM = "gpu_smoke"
# name -> LlamaConfig fields (Llama-3.2-1B and Llama-3-8B shapes)
SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=4096, tie_word_embeddings=True),
    "small": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=4096, tie_word_embeddings=True),  # the CPU test's
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}
BUDGET = ["--seq-len", "128", "--batch-size", "1"]
# stage -> the CLI arguments (w: the work folder with text.txt and instruct.json; o: this size's outputs)
STAGES = {
    "analyze": lambda w, o, model: ["analyze", model, "--kinds", "all"],
    "taylor": lambda w, o, model: ["prune", model, "--method", "taylor", "--ratio", "0.2", "--unprunable", "none",
                                   "--data", f"{w}/text.txt", "--calib-samples", "1", *BUDGET,
                                   "-o", f"{o}/taylor", "--overwrite"],
    "lhspg": lambda w, o, model: ["prune", model, "--method", "lhspg", "--ratio", "0.2", "--unprunable", "none",
                                  "--data", f"{w}/text.txt", "--calib-samples", "1", "--saliency-samples", "1",
                                  "--tokens", "512", "--periods", "1", "--warmup-share", "0.25",
                                  "--gradient-checkpointing", "true", *BUDGET, "-o", f"{o}/lhspg", "--overwrite"],
    "recover": lambda w, o, model: ["recover", f"{o}/taylor", "--dense", model, "--data", f"{w}/text.txt",
                                    "--instruct", f"{w}/instruct.json", "--tokens", "512", "--mix-interval", "2",
                                    "--gradient-checkpointing", "true", *BUDGET, "-o", f"{o}/recovered"],
    "eval": lambda w, o, model: ["eval", model, f"{o}/taylor", "--ppl", f"{w}/text.txt", "--ppl-windows", "2",
                                 "--tasks", "none", "--speed"],
}


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def write_data(work: Path) -> None:
    """text.txt (the repository's Markdown) and instruct.json (Alpaca records cut from it), once."""
    if (work / "instruct.json").is_file():
        return
    work.mkdir(parents=True, exist_ok=True)
    docs = [p.read_text() for p in sorted([*ROOT.glob("*.md"), *ROOT.glob("docs/*.md")])]
    paragraphs = [p.strip() for doc in docs for p in doc.split("\n\n") if len(p.strip()) > 200]
    (work / "text.txt").write_text("\n\n".join(paragraphs * 4))
    records = [{"instruction": "Continue the text.", "input": p[:120], "output": p[120:600]} for p in paragraphs]
    (work / "instruct.json").write_text(json.dumps(records))


def tokenizer(work: Path):
    """A 4,096-token byte-level BPE trained on text.txt (seconds; saved with every model folder)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=["<pad>", "<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([str(work / "text.txt")], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build_model(work: Path, size: str) -> tuple[Path, int]:
    """A random-weight model of SHAPES[size] in bfloat16, built on the device and saved once: (folder, params)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    folder = work / f"model-{size}"
    config = LlamaConfig(**SHAPES[size], max_position_embeddings=4096, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0)
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        with torch.device(device()):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(folder)
        tokenizer(work).save_pretrained(folder)
        del model
        torch.cuda.empty_cache() if device() == "cuda" else None
    with torch.device("meta"):
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    return folder, params


def child(argv: list[str]) -> None:
    """Run one CLI command in this process, then print its peak memory (GPU allocated, or RSS) as JSON."""
    from lorashear.cli import main

    start = time.time()
    code = main(argv)
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("GPU_SMOKE " + json.dumps({"exit": code, "peak_bytes": peak, "seconds": round(time.time() - start, 1)}))
    sys.exit(code)


def run_stage(argv: list[str]) -> dict:
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, __file__, "--child", *argv], env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("GPU_SMOKE ")]
    if done.returncode != 0 or not lines:
        return {"exit": done.returncode, "error": (done.stderr or done.stdout)[-1500:]}
    return json.loads(lines[-1].removeprefix("GPU_SMOKE "))


def agreement(work: Path) -> dict:
    """The tiny model's logits and Taylor scores computed on the CPU and on the device, both in float32."""
    from transformers import AutoModelForCausalLM

    from lorashear.graph import build_graph
    from lorashear.importance import ScoreContext, get_criterion

    folder, _ = build_model(work, "tiny")
    ids = torch.randint(3, 4000, (2, 64), generator=torch.Generator().manual_seed(0))
    out = {}
    for dev in ("cpu", device()):
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(dev).eval()
        with torch.no_grad():
            logits = model(ids.to(dev)).logits.float().cpu()
        graph = build_graph(model, ("kv_group", "mlp_channel"))
        scores = get_criterion("taylor").score(ScoreContext(model, graph, ids.to(dev), batch_size=2)).scores
        out[dev] = (logits, torch.tensor([scores[i] for i in sorted(scores)]))
    (cpu_logits, cpu_scores), (dev_logits, dev_scores) = out["cpu"], out[device()]
    return {"device": device(), "max_logit_difference": float((cpu_logits - dev_logits).abs().max()),
            "max_taylor_relative_difference": float(((cpu_scores - dev_scores).abs() / cpu_scores.abs().clamp_min(
                1e-12)).max())}


def markdown(results: dict) -> str:
    lines = [f"# Every stage on {results['device_name']}, bfloat16, tiny budgets", "",
             f"Command: `{results['command']}`; torch {results['torch']}. Peak: "
             f"{'torch.cuda.max_memory_allocated() of the stage' if results['device'] == 'cuda' else 'peak RSS'} "
             "(its own child process); bytes/param over the dense model's parameters.", "",
             "| model | params | stage | peak GB | bytes/param | seconds | exit |", "|---|---:|---|---:|---:|---:|---|"]
    for key, row in results["rows"].items():
        size, stage = key.split(" ")
        params = results["params"][size]
        peak = row.get("peak_bytes")
        cells = ["", ""] if peak is None else [f"{peak / 1e9:.2f}", f"{peak / params:.2f}"]
        lines.append(f"| {size} | {params:,} | {stage} | {cells[0]} | {cells[1]} | {row.get('seconds', '')} | "
                     f"{row['exit']} |")
    check = results.get("agreement")
    if check:
        lines += ["", f"CPU vs {check['device']} (float32, tiny LLaMA): logits differ by at most "
                      f"{check['max_logit_difference']:.2e}; Taylor scores by at most "
                      f"{check['max_taylor_relative_difference']:.2e} relative."]
    return "\n".join(lines) + "\n"


def save(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{STEM}.json").write_text(json.dumps(results, indent=2))
    (out / f"{STEM}.md").write_text(markdown(results))


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--sizes", default="1b,8b")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    path = args.out / f"{STEM}.json"
    results = json.loads(path.read_text()) if path.is_file() else {"rows": {}, "params": {}}
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    results.update(device=device(), device_name=name, torch=torch.__version__,
                   command="PYTHONPATH=src python benchmarks/gpu_smoke.py " + " ".join(sys.argv[1:]))
    write_data(args.workdir)
    if "agreement" not in results:
        results["agreement"] = agreement(args.workdir)
        save(results, args.out)
    for size in args.sizes.split(","):
        folder, results["params"][size] = build_model(args.workdir, size)
        for stage in args.stages.split(","):
            key = f"{size} {stage}"
            if results["rows"].get(key, {}).get("exit") == 0:
                continue
            print(f"[{key}]", flush=True)
            outputs = args.workdir / size
            if stage == "recover":
                shutil.rmtree(outputs / "recovered", ignore_errors=True)  # an earlier failed try's
            results["rows"][key] = run_stage(STAGES[stage](str(args.workdir), str(outputs), str(folder)))
            print(f"[{key}] {json.dumps(results['rows'][key])[:300]}", flush=True)
            save(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
