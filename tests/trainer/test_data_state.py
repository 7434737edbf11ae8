"""The data position saved with each checkpoint: per host, restored on resume, never silently lost."""
import json
import shutil

import pytest

from protlm import checkpoints, partitioning
from tests.trainer import helpers

ONE = partitioning.PartitionConfig(num_devices=1)


def _data_dir(model_dir, step):
    return model_dir / "checkpoints" / str(step) / checkpoints.DATA_ITEM


def _info(model_dir, step):
    return json.loads((_data_dir(model_dir, step) / "process_00000-of-00001" /
                       checkpoints.DATA_STATE_FILE).read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """3 steps on arrays, checkpoints at steps 2 and 3."""
    model_dir = tmp_path_factory.mktemp("data_state") / "run"
    helpers.run(model_dir, steps=3, partition=ONE, checkpoint_every=2)
    return model_dir


@pytest.fixture()
def run_dir(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


def test_each_checkpoint_holds_this_hosts_position(trained):
    for step in (2, 3):
        info = _info(trained, step)
        assert info["batches_consumed"] == step
        assert info["description"]["source"] == "arrays" and info["description"]["batch_size"] == 8


@pytest.mark.parametrize("damage", ["corrupt", "missing", "other_host_count"])
def test_unusable_data_state_is_an_error_naming_the_checkpoint_and_the_flag(run_dir, damage):
    data = _data_dir(run_dir, 3)
    mine = data / "process_00000-of-00001"
    if damage == "corrupt":
        (mine / checkpoints.DATA_STATE_FILE).write_text("{not json")
    elif damage == "missing":
        shutil.rmtree(mine)
    else:
        mine.rename(data / "process_00000-of-00002")
    with pytest.raises(checkpoints.DataStateError) as err:
        helpers.run(run_dir, steps=5, partition=ONE, checkpoint_every=2)
    message = str(err.value)
    assert str(data) in message and "RESTART_DATA=True" in message and "step 3" in message
    assert checkpoints.latest_step(run_dir) == 3                   # nothing trained, nothing saved
    if damage == "corrupt":
        out = helpers.run(run_dir, steps=4, partition=ONE, checkpoint_every=2, restart_data=True)
        assert out["status"] == "done" and out["step"] == 4
        assert _info(run_dir, 4)["batches_consumed"] == 1         # the data restarted on purpose


def test_changed_stream_is_an_error_not_a_silent_restart(run_dir):
    with pytest.raises(checkpoints.DataStateError, match="batch_size was 8, now 4"):
        helpers.run(run_dir, steps=5, partition=ONE, checkpoint_every=2, batch_size=4)


def test_params_only_checkpoint_starts_the_data_from_its_beginning(tmp_path):
    import flax.linen as nn
    import jax

    from protlm import models
    cfg = models.get_config("prot_t5_tiny")
    family = models.get_family(cfg)
    shapes = family.batch_shapes(cfg, family.default_lengths(16), 2, pack=False)
    params = nn.unbox(family.model(cfg).init(jax.random.key(0), shapes)["params"])
    checkpoints.save_params(tmp_path, params, cfg, step=0)
    assert not _data_dir(tmp_path, 0).exists()
    out = helpers.run(tmp_path, steps=2, partition=ONE, checkpoint_every=2)
    assert out["step"] == 2 and _info(tmp_path, 2)["batches_consumed"] == 2
