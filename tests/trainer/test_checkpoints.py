"""save_params / load_params, atomicity, and restoring onto other meshes."""
import json

import jax
import pytest

from protlm import checkpoints, models, optimizers, partitioning, train_state
from protlm.models import scan_utils
from tests.trainer import helpers


def _params(cfg):
    model = models.get_model(cfg)
    shapes = models.get_family(cfg).batch_shapes(cfg, {"inputs": 8, "targets": 8}, 2, pack=False)
    import flax.linen as nn
    return nn.meta.unbox(model.init(jax.random.key(0), shapes)["params"])


@pytest.mark.parametrize("scan", [False, True])
def test_save_and_load_params_roundtrip(tmp_path, scan):
    cfg = models.get_config("prot_t5_tiny", scan_layers=scan)
    params = _params(cfg)
    unscanned = scan_utils.unstack_layers(params) if scan else params
    # save_params accepts either layout and stores the config's layout
    checkpoints.save_params(tmp_path, unscanned, cfg, step=0)
    loaded, cfg2 = checkpoints.load_params(tmp_path)
    assert cfg2 == cfg
    assert "layers_0" in loaded["encoder"] and "layers" not in loaded["encoder"]
    assert helpers.max_abs_diff(loaded, unscanned) == 0.0
    assert json.loads((tmp_path / "config.json").read_text())["family"] == "t5"
    with pytest.raises(FileExistsError):
        checkpoints.save_params(tmp_path, params, cfg, step=0)
    checkpoints.save_params(tmp_path, params, cfg, step=7)
    assert checkpoints.latest_step(tmp_path) == 7
    loaded0, _ = checkpoints.load_params(tmp_path, step=0)
    assert helpers.max_abs_diff(loaded0, unscanned) == 0.0
    with pytest.raises(FileNotFoundError, match="no checkpoint at step 3"):
        checkpoints.load_params(tmp_path, step=3)


def test_half_written_checkpoint_is_never_loaded(tmp_path):
    cfg = models.get_config("prot_bert_tiny")
    params = _params(cfg)
    checkpoints.save_params(tmp_path, params, cfg, step=1)
    # an interrupted save leaves orbax's temporary directory behind
    tmp = tmp_path / "checkpoints" / "5.orbax-checkpoint-tmp-1234"
    (tmp / "state").mkdir(parents=True)
    (tmp / "state" / "garbage").write_bytes(b"\0" * 10)
    assert checkpoints.latest_step(tmp_path) == 1
    loaded, _ = checkpoints.load_params(tmp_path)
    assert helpers.max_abs_diff(loaded, params) == 0.0


def test_load_params_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        checkpoints.load_params(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        checkpoints.load_config(tmp_path)


def test_checkpoint_from_8_devices_restores_on_1_device_and_2x4_mesh(tmp_path):
    helpers.run(tmp_path, steps=2, partition=partitioning.PartitionConfig(data=4, model=2))
    cfg = models.get_config("prot_t5_tiny")
    model = models.get_model(cfg)
    tx = optimizers.adafactor(optimizers.constant_schedule(1e-2))
    shapes = models.get_family(cfg).batch_shapes(cfg, {"inputs": 16, "targets": 16}, 8,
                                                 pack=False)
    reference = None
    for partition in (partitioning.PartitionConfig(data=4, model=2),
                      partitioning.PartitionConfig(data=1, num_devices=1),
                      partitioning.PartitionConfig(data=2, model=4),
                      partitioning.PartitionConfig(data=1, fsdp=2, model=4, rules="fsdp")):
        mesh, rules = partition.mesh(), partition.logical_rules()
        abstract, shardings = train_state.state_shardings(model, tx, shapes, mesh, rules)
        with checkpoints.make_manager(tmp_path, read_only=True) as mngr:
            state, data_state = checkpoints.restore_state(mngr, 2, abstract.to_dict())
        assert data_state["batches_consumed"] == 2
        assert int(state["step"]) == 2
        leaf = state["params"]["encoder"]["layers_0"]["mlp"]["wi"]["kernel"]
        assert leaf.sharding == shardings.params["encoder"]["layers_0"]["mlp"]["wi"]["kernel"]
        host = jax.device_get(state)
        if reference is None:
            reference = host
        else:
            assert helpers.max_abs_diff(host, reference) == 0.0
