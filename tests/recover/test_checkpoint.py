import json

import pytest

from lorashear.errors import LorashearError
from lorashear.recover import checkpoint as ckpt


def test_checkpoints_complete_latest_and_pruned(tmp_path):
    work = tmp_path / ".out.partial"
    for step in (2, 4, 6):
        path = ckpt.checkpoint_dir(work, step)
        path.mkdir(parents=True)
        if step != 6:  # step 6 was killed mid-save: no marker, never used
            ckpt.mark_complete(path, step, step * 10)
    assert ckpt.checkpoint_step(ckpt.latest_checkpoint(work)) == 4
    ckpt.prune_checkpoints(work, keep=1)
    assert [p.name for p in ckpt.list_checkpoints(work)] == ["step-00000004"]


def test_run_dir_rules(tmp_path):
    out = tmp_path / "out"
    work = ckpt.check_run_dir(out, resume=False)
    assert work == tmp_path / ".out.partial" and not work.exists()
    ckpt.start_run_dir(work, resume=False)
    (work / "junk").write_text("left by a run that died before its first checkpoint")
    ckpt.check_run_dir(out, resume=False)  # no checkpoint yet: a fresh run may start over
    ckpt.start_run_dir(work, resume=False)
    assert not (work / "junk").exists()
    path = ckpt.checkpoint_dir(work, 1)
    path.mkdir(parents=True)
    ckpt.mark_complete(path, 1, 10)
    with pytest.raises(LorashearError, match="--resume"):
        ckpt.check_run_dir(out, resume=False)
    assert ckpt.check_run_dir(out, resume=True) == work
    ckpt.finish(work, out)
    assert out.is_dir() and not work.exists() and not (out / "checkpoints").exists()
    with pytest.raises(LorashearError, match="already exists"):
        ckpt.check_run_dir(out, resume=False)


def test_model_extras_keep_a_pruned_folder_loadable(tmp_path):
    source, target = tmp_path / "pruned", tmp_path / "merged"
    source.mkdir()
    target.mkdir()
    (source / "config.json").write_text(json.dumps({"model_type": "llama", "lorashear": {"layers": [1, 2]},
                                                    "auto_map": {"AutoModelForCausalLM": "modeling.M"}}))
    (source / "modeling.py").write_text("# remote code")
    (source / "model.safetensors").write_text("old weights")
    (target / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    (target / "model.safetensors").write_text("new weights")
    ckpt.copy_model_extras(source, target)
    config = json.loads((target / "config.json").read_text())
    assert config["lorashear"] == {"layers": [1, 2]} and config["hidden_size"] == 8 and "auto_map" in config
    assert (target / "modeling.py").read_text() == "# remote code"
    assert (target / "model.safetensors").read_text() == "new weights"
