"""kill -9 then rerun resumes exactly (seqio data included); SIGTERM saves then exits 0."""
import signal

import pytest

from protlm import checkpoints
from tests.trainer import helpers, subproc

FAST = ["--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 32}", "--gin.BATCH_SIZE=4",
        "--gin.EVAL_EVERY=0", "--gin.LOG_EVERY=1", "--gin.CHECKPOINT_EVERY=2",
        "--gin_bindings=models.get_config.num_encoder_layers = 1",
        "--gin_bindings=models.get_config.num_decoder_layers = 1",
        "--gin_bindings=models.get_config.emb_dim = 32",
        "--gin_bindings=models.get_config.mlp_dim = 64"]


def _cmd(model_dir, fasta, steps):
    return ["protlm.train", "--gin_file=gin/quickstart.gin", f"--gin.MODEL_DIR='{model_dir}'",
            f"--gin.FASTA_PATTERN='{fasta}'", f"--gin.TRAIN_STEPS={steps}", *FAST]


@pytest.fixture
def fasta(pretraining_fasta):
    return pretraining_fasta[-1]     # the smallest part of the shared corpus


@pytest.mark.slow
def test_kill_9_then_rerun_equals_uninterrupted(tmp_path, fasta):
    full = subproc.run(_cmd(tmp_path / "full", fasta, 10))
    assert full.returncode == 0, full.stdout[-3000:] + full.stderr[-3000:]
    proc = subproc.popen(_cmd(tmp_path / "split", fasta, 10), log_path=tmp_path / "split.log")
    subproc.wait_for(lambda: (checkpoints.latest_step(tmp_path / "split") or 0) >= 4, proc)
    proc.kill()                                   # SIGKILL: no chance to save anything
    proc.wait()
    resumed = subproc.run(_cmd(tmp_path / "split", fasta, 10))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    a, _ = checkpoints.load_params(tmp_path / "full")
    b, _ = checkpoints.load_params(tmp_path / "split")
    assert helpers.max_abs_diff(a, b) <= 1e-6


@pytest.mark.slow
def test_sigterm_saves_then_exits_0(tmp_path, fasta):
    model_dir = tmp_path / "run"
    proc = subproc.popen(_cmd(model_dir, fasta, 100000) + ["--gin.CHECKPOINT_EVERY=100000"],
                         log_path=tmp_path / "log")
    metrics = model_dir / "metrics" / "train.jsonl"
    subproc.wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 0, (tmp_path / "log").read_text()[-3000:]
    step = checkpoints.latest_step(model_dir)
    assert step is not None and step >= 3
