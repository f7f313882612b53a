"""pruning.json carries its format; every format lorashear wrote reads back the same groups."""

from __future__ import annotations

import json

import pytest

from lorashear.compress import PRUNING_FORMAT, read_pruning_record
from lorashear.errors import LorashearError
from lorashear.graph.structures import Group, Slice, groups_to_json

GROUPS = [Group("mlp_channel", 0, [Slice("model.layers.0.mlp.up_proj.weight", 0, (i,)),
                                   Slice("model.layers.0.mlp.down_proj.weight", 1, (i,))]) for i in (3, 4, 7)]


def folder_with(tmp_path, record: dict):
    (tmp_path / "pruning.json").write_text(json.dumps(record))
    return tmp_path


def same(a: list[Group], b: list[Group]) -> bool:
    return [g.to_dict() for g in a] == [g.to_dict() for g in b]


def test_the_current_format_reads_back_its_groups(tmp_path):
    record = read_pruning_record(folder_with(tmp_path, {"format": PRUNING_FORMAT, "method": "taylor",
                                                        "removed": groups_to_json(GROUPS)}))
    assert record["format"] == PRUNING_FORMAT == 2 and record["method"] == "taylor"
    assert same(record["removed"], GROUPS)


def test_a_folder_from_before_the_format_field_reads_as_format_1(tmp_path):
    """Folders written before `format` existed hold one dict per group: still loaded, as format 1."""
    record = read_pruning_record(folder_with(tmp_path, {"method": "lhspg", "removed": [g.to_dict() for g in GROUPS]}))
    assert record["format"] == 1 and same(record["removed"], GROUPS)


@pytest.mark.parametrize("version", [PRUNING_FORMAT + 1, "2"])
def test_a_newer_or_odd_format_is_one_clear_error(tmp_path, version):
    with pytest.raises(LorashearError, match="upgrade lorashear"):
        read_pruning_record(folder_with(tmp_path, {"format": version, "removed": []}))


def test_a_folder_without_pruning_json_is_one_clear_error(tmp_path):
    with pytest.raises(LorashearError, match="lorashear prune"):
        read_pruning_record(tmp_path)
