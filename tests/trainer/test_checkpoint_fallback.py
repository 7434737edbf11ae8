"""A committed checkpoint whose data files were truncated (issue 15 item 9): a clear message naming
the step, an automatic fall back to the previous complete step with a warning, and `--step`."""
import logging
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protlm import checkpoints, models
from tests.trainer import helpers, subproc


def truncate_data_files(model_dir, step) -> int:
    """Cuts every array data file of checkpoint `step` in half (a copy that stopped early)."""
    files = [p for p in (checkpoints.checkpoint_dir(model_dir) / str(step) / "state").rglob("*")
             if p.is_file() and p.parent.name == "d"]
    for p in files:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return len(files)


@pytest.fixture
def two_steps(tmp_path):
    """A tiny ProtT5 saved at steps 1 and 2 (different params); step 2's data files truncated."""
    cfg = models.get_config("prot_t5_tiny")
    model = models.get_model(cfg)
    shapes = {k: jnp.zeros((1, 8), jnp.int32) for k in ("encoder_input_tokens", "decoder_input_tokens")}
    params = {}
    for step in (1, 2):
        params[step] = nn.unbox(model.init(jax.random.PRNGKey(step), shapes)["params"])
        checkpoints.save_params(tmp_path / "model", params[step], cfg, step=step)
    assert truncate_data_files(tmp_path / "model", 2) > 0
    return tmp_path / "model", params


def test_load_params_falls_back_to_the_previous_complete_step(two_steps, caplog):
    model_dir, params = two_steps
    with caplog.at_level(logging.WARNING):
        loaded, _ = checkpoints.load_params(model_dir)
    assert helpers.max_abs_diff(loaded, params[1]) == 0.0
    warning = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warning) == 1 and "step 2" in warning[0] and "using step 1 instead" in warning[0]
    assert "tensorstore_spec" not in warning[0]


def test_an_unreadable_step_asked_for_is_one_clear_error(two_steps):
    model_dir, _ = two_steps
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.load_params(model_dir, step=2)
    msg = str(err.value)
    assert f"{checkpoints.checkpoint_dir(model_dir)}/2" in msg and "is unreadable" in msg
    assert "--step 1" in msg and "\n" not in msg


def test_cli_step_and_fallback_on_export_and_embed(two_steps, tmp_path):
    model_dir, _ = two_steps
    fasta = tmp_path / "p.fasta"
    fasta.write_text(">a\nMKTAYIAKQR\n>b\nMSLLK\n")
    chosen = subproc.run(["protlm.export_hf", "--checkpoint_dir", str(model_dir), "--step", "1",
                          "--output_dir", str(tmp_path / "hf1")])
    assert chosen.returncode == 0, chosen.stderr[-3000:]
    bad = subproc.run(["protlm.export_hf", "--checkpoint_dir", str(model_dir), "--step", "2",
                       "--output_dir", str(tmp_path / "hf2")])
    assert bad.returncode == 2 and "is unreadable" in bad.stderr and "Traceback" not in bad.stderr
    assert "Event loop is closed" not in bad.stderr
    latest = subproc.run(["protlm.embed", "--model", str(model_dir), "--fasta", str(fasta), "--output",
                          str(tmp_path / "e.h5"), "--no_progress"])
    assert latest.returncode == 0, latest.stderr[-3000:]
    assert "step 2" in latest.stderr and "using step 1 instead" in latest.stderr


def test_training_resumes_from_the_previous_complete_step(tmp_path, caplog):
    run = tmp_path / "run"
    helpers.run(run, steps=4, checkpoint_every=2)
    truncate_data_files(run, 4)
    with caplog.at_level(logging.INFO):
        result = helpers.run(run, steps=6, checkpoint_every=2)
    assert result["status"] == "done" and result["step"] == 6
    text = caplog.text
    assert "checkpoint step 4" in text and "unreadable" in text and "resumed from" in text
    assert "step 2" in text
    moved = pathlib.Path(run) / "unreadable_checkpoints" / "4"
    assert moved.is_dir()                       # kept for inspection, out of orbax's way
    assert checkpoints.latest_step(run) == 6
    # the resumed run equals an uninterrupted one (it redid steps 3 and 4 from step 2's state)
    full = tmp_path / "full"
    helpers.run(full, steps=6, checkpoint_every=2)
    a, _ = checkpoints.load_params(run)
    b, _ = checkpoints.load_params(full)
    assert helpers.max_abs_diff(a, b) <= 1e-6
    assert np.isfinite(helpers.losses(run)).all()
