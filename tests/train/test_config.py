import pytest

from lorashear.errors import LorashearError
from lorashear.recover import RecoverConfig
from lorashear.train import LoopConfig
from lorashear.train.logs import StepLog, plot_loss, read_jsonl


def test_recipe_yaml_overrides_and_unknown_keys(tmp_path):
    recipe = tmp_path / "loop.yaml"
    recipe.write_text("batch_size: 8\nlr: 1.0e-3\n")
    config = LoopConfig.from_yaml(recipe, lr=5e-4, seq_len=None)
    assert (config.batch_size, config.lr, config.seq_len) == (8, 5e-4, 256)
    recipe.write_text("batch: 8\n")
    with pytest.raises(LorashearError, match="unknown training option.*batch"):
        LoopConfig.from_yaml(recipe)
    with pytest.raises(LorashearError, match="unknown recovery option"):
        RecoverConfig.from_yaml(recipe)


@pytest.mark.parametrize(("field", "value", "message"), [("grad_accum", 0, "grad_accum must be positive"),
                                                         ("lr", 0.0, "--lr"), ("checkpoint_every", -1, "checkpoint"),
                                                         ("mixed_precision", "fp8", "mixed_precision")])
def test_validate_names_the_bad_option(field, value, message):
    with pytest.raises(LorashearError, match=message):
        LoopConfig(**{field: value}).validate()


def test_resume_refuses_changed_options_but_not_checkpoint_ones(tmp_path):
    saved = tmp_path / "config.yaml"
    LoopConfig(lr=1e-3).save(saved)
    LoopConfig(lr=1e-3, resume=True, stop_after_steps=5, checkpoint_every=7).check_same_run(saved)
    with pytest.raises(LorashearError, match=r"lr: 0.001 -> 0.002"):
        LoopConfig(lr=2e-3, resume=True).check_same_run(saved)


def test_step_log_drops_steps_after_the_checkpoint_and_plots(tmp_path):
    path = tmp_path / "logs" / "steps.jsonl"
    log = StepLog(path)
    for step in (1, 2, 3):
        log.write({"step": step, "loss": 3.0 - step / 10})
    StepLog(path, resume_step=2)  # the killed run logged step 3, the checkpoint holds 2
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]
    assert plot_loss(read_jsonl(path), tmp_path / "loss.png", {2: "phase 2"}).stat().st_size > 0
    assert plot_loss([], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
