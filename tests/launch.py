"""`python -m lorashear ...` as one process or as several under `accelerate launch` (CPU processes, gloo)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_lorashear(args: list[str], processes: int = 1, config: str = "fsdp_cpu_2proc.yaml",
                  timeout: int = 600) -> subprocess.CompletedProcess:
    """`lorashear ARGS` in one process, or in `processes` CPU processes launched with configs/accelerate/`config`;
    fails the test with the end of stderr when it exits non-zero."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
           "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "lorashear", *args]
    if processes > 1:
        env["ACCELERATE_USE_CPU"] = "1"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "configs" / "accelerate" / config), "--num_processes", str(processes),
               "--main_process_port", str(free_port()), *cmd[1:]]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done
