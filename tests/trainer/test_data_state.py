"""The data position saved with each checkpoint: per host, restored on resume, never silently lost."""
import json

import numpy as np
import pytest

from protlm import checkpoints, partitioning
from tests.trainer import helpers

ONE = partitioning.PartitionConfig(num_devices=1)


def _data_dir(model_dir, step):
    return model_dir / "checkpoints" / str(step) / checkpoints.DATA_ITEM


def test_each_checkpoint_holds_this_hosts_position(tmp_path):
    helpers.run(tmp_path, steps=3, partition=ONE, checkpoint_every=2)
    for step, consumed in ((2, 2), (3, 3)):
        info = json.loads((_data_dir(tmp_path, step) / "process_00000-of-00001" /
                           checkpoints.DATA_STATE_FILE).read_text())
        assert info["batches_consumed"] == consumed
        assert info["description"]["source"] == "arrays" and info["description"]["batch_size"] == 8


@pytest.mark.parametrize("damage", ["corrupt", "missing", "other_host_count"])
def test_unusable_data_state_is_an_error_naming_the_checkpoint_and_the_flag(tmp_path, damage):
    helpers.run(tmp_path, steps=2, partition=ONE, checkpoint_every=2)
    data = _data_dir(tmp_path, 2)
    mine = data / "process_00000-of-00001"
    if damage == "corrupt":
        (mine / checkpoints.DATA_STATE_FILE).write_text("{not json")
    elif damage == "missing":
        for f in mine.iterdir():
            f.unlink()
        mine.rmdir()
    else:
        mine.rename(data / "process_00000-of-00002")
    with pytest.raises(checkpoints.DataStateError) as err:
        helpers.run(tmp_path, steps=4, partition=ONE, checkpoint_every=2)
    message = str(err.value)
    assert str(data) in message and "RESTART_DATA=True" in message and "step 2" in message
    assert checkpoints.latest_step(tmp_path) == 2                  # nothing trained, nothing saved
    out = helpers.run(tmp_path, steps=4, partition=ONE, checkpoint_every=2, restart_data=True)
    assert out["status"] == "done" and out["step"] == 4


def test_changed_stream_is_an_error_not_a_silent_restart(tmp_path):
    helpers.run(tmp_path, steps=2, partition=ONE, checkpoint_every=2, batch_size=8)
    with pytest.raises(checkpoints.DataStateError, match="batch_size was 8, now 4"):
        helpers.run(tmp_path, steps=4, partition=ONE, checkpoint_every=2, batch_size=4)


def test_resume_continues_the_array_stream(tmp_path):
    helpers.run(tmp_path / "full", steps=6, partition=ONE, checkpoint_every=3)
    helpers.run(tmp_path / "split", steps=3, partition=ONE, checkpoint_every=3)
    helpers.run(tmp_path / "split", steps=6, partition=ONE, checkpoint_every=3)
    np.testing.assert_allclose(helpers.losses(tmp_path / "split")[3:], helpers.losses(tmp_path / "full")[3:],
                               rtol=1e-6)
    info = json.loads((_data_dir(tmp_path / "split", 6) / "process_00000-of-00001" /
                       checkpoints.DATA_STATE_FILE).read_text())
    assert info["batches_consumed"] == 6


def test_params_only_checkpoint_starts_the_data_from_its_beginning(tmp_path):
    import jax
    import flax.linen as nn
    from protlm import models
    cfg = models.get_config("prot_t5_tiny")
    family = models.get_family(cfg)
    shapes = family.batch_shapes(cfg, family.default_lengths(16), 2, pack=False)
    params = nn.unbox(family.model(cfg).init(jax.random.key(0), shapes)["params"])
    checkpoints.save_params(tmp_path, params, cfg, step=0)
    assert not _data_dir(tmp_path, 0).exists()
    out = helpers.run(tmp_path, steps=2, partition=ONE, checkpoint_every=2)
    assert out["step"] == 2
