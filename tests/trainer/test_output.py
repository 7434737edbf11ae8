"""What a run prints: each metric once per log step, the evaluation once, a closing summary line;
reading a checkpoint prints no orbax warnings (issue 15, "Output a person can read")."""
import logging
import re

from protlm import checkpoints
from tests.trainer import helpers


def test_one_line_per_log_step_and_eval_and_a_summary(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        helpers.run(tmp_path / "run", steps=4, checkpoint_every=2, eval_every=2)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("protlm")]
    train = [re.match(r"(?:\[train\] )?step (\d+)", m) for m in messages]
    assert [int(t.group(1)) for t in train if t] == [1, 2, 3, 4], messages   # one line per step
    evals = [m for m in messages if m.startswith("eval at step")]
    assert [m.split(":")[0] for m in evals] == ["eval at step 2", "eval at step 4"]
    assert "loss" in evals[0] and "accuracy" in evals[0]
    assert messages[-1].startswith("done at step 4 after ") and "checkpoints in" in messages[-1]
    assert "validation loss" in messages[-1]


def test_reading_a_checkpoint_prints_no_warnings(tmp_path, caplog):
    helpers.run(tmp_path / "run", steps=2, checkpoint_every=2)
    with caplog.at_level(logging.WARNING):
        checkpoints.load_params(tmp_path / "run")
        assert checkpoints.latest_step(tmp_path / "run") == 2
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
