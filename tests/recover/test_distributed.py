"""Two CPU processes under `accelerate launch` train on as many tokens as one process does.

`accelerate launch --cpu --num_processes 2` starts ONE process in accelerate 1.x (several only
through mpirun), so CI uses configs/accelerate/cpu_2proc.yaml: torchrun with ACCELERATE_USE_CPU
set, i.e. two real CPU processes on the gloo backend.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from recover_material import tiny_config

from lorashear.errors import LorashearError
from lorashear.recover import recover
from lorashear.recover.checkpoint import partial_dir

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_see_the_same_token_count(material, tmp_path):
    out = tmp_path / "two"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "configs/accelerate/cpu_2proc.yaml"),
        "--main_process_port", str(_free_port()),
        "-m", "lorashear", "recover", material["pruned"], "-o", str(out), "--dense", material["dense"],
        "--data", *material["data"], "--instruct", *material["instruct"], "--tokens", "256", "--seq-len", "32",
        "--batch-size", "1", "--grad-accum", "1", "--mix-interval", "2", "--checkpoint-every", "2",
    ]  # batch 1 per process: the global batch of one process with batch 2 (2 x 32 tokens), so 4 steps
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "recovery.json").read_text())
    assert summary["num_processes"] == 2 and summary["tokens_per_step"] == 64
    assert summary["tokens_seen"] == 256 and summary["steps"] == 4
    steps = [json.loads(line) for line in (out / "logs" / "steps.jsonl").read_text().splitlines()]
    assert [r["tokens_seen"] for r in steps] == [64, 128, 192, 256]


def test_processes_that_do_not_form_one_job_are_refused(material, tmp_path, monkeypatch):
    # What `accelerate launch --multi_gpu` does without GPUs: WORLD_SIZE=2, yet each process runs alone.
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    with pytest.raises(LorashearError, match="ACCELERATE_USE_CPU"):
        recover(tiny_config(material, tmp_path / "out"))
    assert not partial_dir(tmp_path / "out").exists()
