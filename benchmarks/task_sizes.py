"""Requests per document and tokens per request of each zero-shot task, as lm-eval builds them
(default tokenizer); the table behind `lorashear eval`'s time estimate (zeroshot.TASK_SIZES).

    PYTHONPATH=src python benchmarks/task_sizes.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from lorashear.data import ZERO_SHOT_TASKS
from lorashear.evaluate.tasks import write_task_configs
from lorashear.evaluate.zeroshot import _offline
from lorashear.models import load_tokenizer


def main() -> int:
    _offline()
    from lm_eval.tasks import TaskManager, get_task_dict

    tokenizer = load_tokenizer("smollm2-135m")
    with tempfile.TemporaryDirectory() as folder:
        write_task_configs(list(ZERO_SHOT_TASKS), Path(folder))
        tasks = get_task_dict(list(ZERO_SHOT_TASKS), TaskManager(include_path=folder, include_defaults=False))
        for name in ZERO_SHOT_TASKS:
            task = tasks[name]
            task.build_all_requests(rank=0, world_size=1)
            requests = task.instances
            tokens = sum(len(tokenizer(ctx + cont)["input_ids"]) for ctx, cont in (r.args for r in requests))
            docs = len({r.doc_id for r in requests})
            print(f'    "{name}": TaskSize({docs}, {len(requests) / docs:.2f}, {tokens / len(requests):.0f}),')
    return 0


if __name__ == "__main__":
    sys.exit(main())
