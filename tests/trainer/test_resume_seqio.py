"""Resuming a seqio-fed run: the tf.data position per host, the batches after it, multi-host too."""
import itertools
import json

import numpy as np
import pytest

from protlm import checkpoints, models, optimizers, partitioning, trainer
from protlm.data import shard_pipeline
from protlm.data.batch_sources import SeqioSource
from protlm.data.fasta import read_fasta
from tests.trainer import helpers, subproc
from tests.trainer.test_multiprocess import _free_port

LENGTHS = {"inputs": 32, "targets": 32}
TINY = {"num_encoder_layers": 1, "num_decoder_layers": 1, "emb_dim": 32, "mlp_dim": 64}


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, pretraining_fasta):
    """8 train shards of 400 real proteins (the pipeline's own output, as a user trains on it)."""
    root = tmp_path_factory.mktemp("seqio_resume")
    recs = itertools.islice(read_fasta(pretraining_fasta[-1]), 400)
    (root / "in.fasta").write_text("".join(f">{r.id}\n{r.sequence}\n" for r in recs))
    out = root / "shards"
    shard_pipeline.run(shard_pipeline.ShardConfig(inputs=(str(root / "in.fasta"),), output_dir=str(out),
                                                  num_shards=8, validation_fraction=0.05))
    return str(out)


def _run(model_dir, shard_dir, steps):
    return trainer.train(
        model_dir=str(model_dir), model_config=models.get_config("prot_t5_tiny", **TINY),
        data=SeqioSource("prott5_span_denoising", LENGTHS, fasta_pattern=shard_dir, seed=1),
        train_steps=steps, batch_size=8, learning_rate=optimizers.constant_schedule(1e-2),
        partition=partitioning.PartitionConfig(data=4, model=2),
        checkpoint=checkpoints.CheckpointConfig(every_steps=3, keep=None),
        evaluation=trainer.EvalConfig(every_steps=0), log_every=1)


def test_resumed_seqio_run_equals_uninterrupted(tmp_path, shard_dir):
    _run(tmp_path / "full", shard_dir, 6)
    _run(tmp_path / "split", shard_dir, 3)
    state = tmp_path / "split" / "checkpoints" / "3" / "data" / "process_00000-of-00001"
    assert (state / "iterator.index").exists()
    assert json.loads((state / checkpoints.DATA_STATE_FILE).read_text())["description"]["task_name"] == \
        "prott5_span_denoising"
    out = _run(tmp_path / "split", shard_dir, 6)
    assert out["step"] == 6
    np.testing.assert_allclose(helpers.losses(tmp_path / "split")[3:], helpers.losses(tmp_path / "full")[3:],
                               rtol=1e-6)
    a, _ = checkpoints.load_params(tmp_path / "full")
    b, _ = checkpoints.load_params(tmp_path / "split")
    assert helpers.max_abs_diff(a, b) <= 1e-6


@pytest.mark.slow
def test_two_hosts_resume_each_their_own_position(tmp_path, shard_dir):
    """2 processes x 4 devices: stop at step 2, resume to 4 = the uninterrupted 4 steps."""
    common = ["protlm.train", "--gin_file=gin/quickstart.gin", f"--gin.FASTA_PATTERN='{shard_dir}'",
              f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}", "--gin.BATCH_SIZE=8", "--gin.NUM_DEVICES=0",
              "--gin.MESH_DATA=4", "--gin.MESH_MODEL=2", "--gin.EVAL_EVERY=0", "--gin.LOG_EVERY=1",
              "--gin.CHECKPOINT_EVERY=2", *[f"--gin_bindings=models.get_config.{k} = {v}" for k, v in TINY.items()]]

    def two_hosts(model_dir, steps):
        port = _free_port()
        procs = [subproc.popen(common + [f"--gin.MODEL_DIR='{model_dir}'", f"--gin.TRAIN_STEPS={steps}",
                                         f"--coordinator_address=localhost:{port}", "--num_processes=2",
                                         f"--process_id={i}"], devices=4, log_path=tmp_path / f"{model_dir.name}{steps}-{i}.log")
                 for i in range(2)]
        logs = []
        for i, p in enumerate(procs):
            log = tmp_path / f"{model_dir.name}{steps}-{i}.log"
            assert p.wait(timeout=900) == 0, log.read_text()[-3000:]
            logs.append(log.read_text())
        return logs

    two_hosts(tmp_path / "full", 4)
    two_hosts(tmp_path / "split", 2)
    data = tmp_path / "split" / "checkpoints" / "2" / "data"
    assert sorted(p.name for p in data.glob("process_*")) == ["process_00000-of-00002", "process_00001-of-00002"]
    logs = two_hosts(tmp_path / "split", 4)
    assert all("data stream resumed at batch 2" in log for log in logs)
    np.testing.assert_allclose(helpers.losses(tmp_path / "split")[2:], helpers.losses(tmp_path / "full")[2:],
                               rtol=1e-6)
    a, _ = checkpoints.load_params(tmp_path / "full")
    b, _ = checkpoints.load_params(tmp_path / "split")
    assert helpers.max_abs_diff(a, b) <= 1e-6
