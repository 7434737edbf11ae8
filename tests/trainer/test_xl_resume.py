"""ProtTXL / ProtXLNet training resumes exactly: data position of every stream row and the carried
memory (kill -9 between checkpoints, then the same command again)."""
import jax
import numpy as np
import pytest

from protlm import checkpoints, models, optimizers, partitioning, train_state
from tests.trainer import helpers, subproc
from tests.trainer.subproc import wait_for as _wait_for

SMALL = ["--gin.BATCH_SIZE=4", "--gin.EVAL_EVERY=5", "--gin.EVAL_BATCHES=2", "--gin.LOG_EVERY=1",
         "--gin.CHECKPOINT_EVERY=2", "--gin.KEEP_CHECKPOINTS=None",
         "--gin_bindings=models.get_config.hidden_size = 32",
         "--gin_bindings=models.get_config.num_layers = 2",
         "--gin_bindings=models.get_config.num_heads = 2",
         "--gin_bindings=models.get_config.head_dim = 16",
         "--gin_bindings=models.get_config.intermediate_size = 64"]
TXL = ["--gin_file=gin/quickstart_txl.gin", "--gin.TASK_FEATURE_LENGTHS={'inputs': 16}",
       "--gin_bindings=models.get_config.mem_len = 24",
       "--gin_bindings=optimizers.warmup_cosine_schedule.warmup_steps = 2"]
XLNET = ["--gin_file=gin/quickstart_xlnet.gin", "--gin.TASK_FEATURE_LENGTHS={'inputs': 24}",
         "--gin.REUSE_LEN=8", "--gin.PERM_SIZE=4", "--gin.NUM_PREDICT=4",
         "--gin_bindings=models.get_config.mem_len = 16",
         "--gin_bindings=optimizers.linear_warmup_linear_decay.warmup_steps = 2"]


def _cmd(recipe, model_dir, fasta, steps):
    return ["protlm.train", *recipe, f"--gin.MODEL_DIR='{model_dir}'",
            f"--gin.FASTA_PATTERN='{fasta}'", f"--gin.TRAIN_STEPS={steps}", *SMALL]


def _state(model_dir, step):
    """The saved train state (params, optimizer state, carry) of `model_dir` at `step`."""
    config = checkpoints.load_config(model_dir)
    family = models.get_family(config)
    model = family.model(config)
    with checkpoints.make_manager(model_dir, read_only=True) as mngr:
        shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in
                  family.batch_shapes(config, _lengths(config), 4, False).items()}
        partition = partitioning.PartitionConfig()
        tx = optimizers.lamb(optimizers.constant_schedule(0.0)) if family.name == "txl" else \
            optimizers.adamw(optimizers.constant_schedule(0.0), weight_decay=0.0, b2=0.999,
                             eps=1e-6)
        abstract, _ = train_state.state_shardings(model, tx, shapes, partition.mesh(),
                                                  partition.logical_rules())
        state, data = checkpoints.restore_state(mngr, step, abstract.to_dict())
    return jax.device_get(state), data


def _lengths(config):
    return {"inputs": 16} if config.family_name == "txl" else {"inputs": 24, "targets": 4}


@pytest.fixture
def fasta(pretraining_fasta):
    return pretraining_fasta[-1]     # the smallest part of the shared corpus


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [pytest.param(TXL, id="txl"),
                                    pytest.param(XLNET, id="xlnet")])
def test_kill_9_then_rerun_restores_stream_and_memory_exactly(tmp_path, fasta, recipe):
    full = subproc.run(_cmd(recipe, tmp_path / "full", fasta, 10))
    assert full.returncode == 0, full.stdout[-3000:] + full.stderr[-3000:]
    proc = subproc.popen(_cmd(recipe, tmp_path / "split", fasta, 10), log_path=tmp_path / "log")
    _wait_for(lambda: (checkpoints.latest_step(tmp_path / "split") or 0) >= 4, proc)
    proc.kill()                                   # SIGKILL: nothing saved on the way out
    proc.wait()
    killed_at = checkpoints.latest_step(tmp_path / "split")
    assert killed_at is not None and killed_at < 10
    resumed = subproc.run(_cmd(recipe, tmp_path / "split", fasta, 10))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    a, data_a = _state(tmp_path / "full", 10)
    b, data_b = _state(tmp_path / "split", 10)
    assert data_a["batches_consumed"] == data_b["batches_consumed"] == 10
    # the memory each stream row carries into step 11 is the same array, bit for bit
    assert np.asarray(a["carry"]["valid"]).min() > 0
    np.testing.assert_array_equal(a["carry"]["mems"], b["carry"]["mems"])
    np.testing.assert_array_equal(a["carry"]["valid"], b["carry"]["valid"])
    assert helpers.max_abs_diff(a["params"], b["params"]) <= 1e-6
    # and the checkpoint the killed run resumed from held the memory of that step
    mid, _ = _state(tmp_path / "full", killed_at)
    mid_split, _ = _state(tmp_path / "split", killed_at)
    np.testing.assert_array_equal(mid["carry"]["mems"], mid_split["carry"]["mems"])
    assert not np.array_equal(mid["carry"]["mems"], a["carry"]["mems"])
