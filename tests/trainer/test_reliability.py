"""`python -m protlm.train` under bad data, faults and concurrency (issue 15 items 1, 3, 6, 7, 8):
real processes, real FASTA; every failure ends the process quickly with one line and a non-zero code."""
import json
import os
import subprocess
import sys
import time

import pytest

from protlm import checkpoint_saves, checkpoints, errors, optimizers, trainer
from protlm.data import splits
from protlm.data.batch_sources import ArraySource
from protlm.downstream import datasets
from tests.trainer import helpers, subproc
from tests.trainer.test_cli import write_array_gin
from tests.trainer.subproc import wait_for as _wait_for
from tests.trainer.test_resilience import FAST


def _fasta_cmd(model_dir, fasta, steps=100000, *extra):
    return ["protlm.train", "--gin_file=gin/quickstart.gin", f"--gin.MODEL_DIR='{model_dir}'",
            f"--gin.FASTA_PATTERN='{fasta}'", f"--gin.TRAIN_STEPS={steps}", *FAST, *extra]


def _array_cmd(gin_file, model_dir, steps, *extra):
    return ["protlm.train", f"--gin_file={gin_file}", f"--gin.MODEL_DIR='{model_dir}'",
            f"--gin.TRAIN_STEPS={steps}", "--gin.NUM_DEVICES=1", *extra]


# ------------------------------------------------------------------ item 1: empty validation split
@pytest.fixture(scope="module")
def no_validation_fasta(data_root, tmp_path_factory):
    """200 real DeepLoc proteins none of which the 1 % id-hash split puts into validation."""
    recs = [r for r in datasets.load_deeploc(data_root)["test"] if not splits.is_validation(r.id)][:200]
    path = tmp_path_factory.mktemp("small") / "small200.fasta"
    datasets.write_fasta([(r.id, r.sequence) for r in recs], path)
    return path


def test_empty_validation_split_is_refused_before_training(tmp_path, no_validation_fasta):
    run = tmp_path / "run"
    t0 = time.time()
    result = subproc.run(_fasta_cmd(run, no_validation_fasta, 2, "--gin.EVAL_EVERY=1"), timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert time.time() - t0 < 120
    assert "train: error: the validation split has no examples" in result.stderr
    for way_out in ("VALIDATION_FASTA_PATTERN", "EVAL_EVERY=0"):
        assert way_out in result.stderr
    assert "Traceback" not in result.stderr and "StopIteration" not in result.stderr
    assert not (run / "metrics" / "train.jsonl").exists()          # no step was wasted
    ok = subproc.run(_fasta_cmd(run, no_validation_fasta, 2, "--gin.EVAL_EVERY=0"), timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert checkpoints.latest_step(run) == 2


class _EvalBreaksAt(ArraySource):
    """Validation batches until training has logged `step`, then a failure (its evaluation)."""

    def __init__(self, train, validation, model_dir, step):
        super().__init__(train, validation)
        self.metrics, self.step = model_dir / "metrics" / "train.jsonl", step

    def __call__(self, split, *a, **k):
        if split == "validation" and self.metrics.exists():
            if json.loads(self.metrics.read_text().splitlines()[-1])["step"] >= self.step:
                raise RuntimeError("validation data vanished")
        return super().__call__(split, *a, **k)


def test_an_eval_failure_keeps_the_checkpoint_of_its_step(tmp_path):
    from protlm import models, partitioning
    from tests.trainer.synthetic import family_arrays

    cfg = models.get_config("prot_t5_tiny")
    data = _EvalBreaksAt(family_arrays(cfg, 64, 16, seed=1), family_arrays(cfg, 16, 16, seed=2),
                         tmp_path / "run", step=4)
    with pytest.raises(RuntimeError, match="validation data vanished"):
        trainer.train(model_dir=str(tmp_path / "run"), model_config=cfg, data=data, train_steps=6,
                      batch_size=8, learning_rate=optimizers.constant_schedule(1e-2),
                      partition=partitioning.PartitionConfig(),
                      checkpoint=checkpoints.CheckpointConfig(every_steps=2),
                      evaluation=trainer.EvalConfig(every_steps=2, num_batches=1), log_every=1)
    assert checkpoints.latest_step(tmp_path / "run") == 4


# ------------------------------------------------------------------ item 3: one trainer per MODEL_DIR
@pytest.mark.slow
def test_second_training_on_one_model_dir_is_refused_and_a_killed_one_resumes(tmp_path):
    gin_file = write_array_gin(tmp_path)
    run = tmp_path / "run"
    first = subproc.popen(_array_cmd(gin_file, run, 100000, "--gin.CHECKPOINT_EVERY=5"),
                          log_path=tmp_path / "first.log")
    try:
        _wait_for(lambda: (checkpoints.latest_step(run) or 0) >= 5, first)
        second = subproc.run(_array_cmd(gin_file, run, 10), timeout=300)
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"another process (pid {first.pid} on {os.uname().nodename}" in second.stderr
        assert str(run) in second.stderr and "Traceback" not in second.stderr
        assert first.poll() is None                      # the first run is unharmed
        first.kill()                                     # kill -9: its lock must not block a resume
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    step = checkpoints.latest_step(run)
    resumed = subproc.run(_array_cmd(gin_file, run, step + 2))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and checkpoints.latest_step(run) == step + 2


# ------------------------------------------------------------------ items 6 and 8: bad data
@pytest.fixture(scope="module")
def broken_fastas(pretraining_fasta, tmp_path_factory):
    """A truncated .gz and a FASTA whose last record is bad (after 1,000 good ones)."""
    import gzip

    root = tmp_path_factory.mktemp("broken")
    raw = open(pretraining_fasta[-1], "rb").read()
    (root / "truncated.fasta.gz").write_bytes(raw[: len(raw) // 40])
    lines = gzip.open(pretraining_fasta[-1], "rt").read().splitlines()[:4000]
    (root / "bad_last.fasta").write_text("\n".join(lines) + "\n>bad\nMKT1X\n")
    (root / "bad_first.fasta").write_text(">bad\nMKT1X\n" + "\n".join(lines[:400]) + "\n")
    return root


@pytest.mark.slow
def test_data_errors_exit_non_zero_quickly_every_time(tmp_path, broken_fastas):
    """The hang in a tf.data destructor came in about half the runs: 5 runs, each must end < 60 s."""
    for i in range(5):
        fasta = broken_fastas / ("truncated.fasta.gz" if i % 2 else "bad_last.fasta")
        t0 = time.time()
        try:
            result = subproc.run(_fasta_cmd(tmp_path / f"run{i}", fasta), timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run {i} on {fasta.name} did not exit within 60 s")
        assert result.returncode == 2, (i, result.stderr[-3000:])
        assert "Fix:" in result.stderr, result.stderr[-3000:]
        print(f"run {i} ({fasta.name}): exit {result.returncode} after {time.time() - t0:.1f} s")


def test_malformed_fasta_is_one_line_and_exit_2_like_embed(tmp_path, broken_fastas):
    fasta = broken_fastas / "bad_first.fasta"
    result = subproc.run(_fasta_cmd(tmp_path / "run", fasta), timeout=300)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if "digit '1'" in line]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "op_kernel" not in result.stderr
    embedded = subproc.run(["protlm.embed", "--model", str(tmp_path / "none"), "--fasta", str(fasta)])
    assert embedded.returncode == 2
    said = [line for line in embedded.stderr.splitlines() if line.startswith("embed: error: ")]
    assert lines[0].removeprefix("train: error: ") == said[0].removeprefix("embed: error: ")


# ------------------------------------------------------------------ item 7: disk full
# Files above this size cannot be written (RLIMIT_FSIZE, set in the child before anything runs): the
# checkpoint's data files fail as on a full disk, the small logs and metrics do not.
LIMITED = ("import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (50000, 50000)); "
           "sys.argv = sys.argv[1:]; runpy.run_module('protlm.train', run_name='__main__')")


@pytest.mark.slow
def test_a_failed_save_stops_the_run_with_one_message(tmp_path):
    gin_file = write_array_gin(tmp_path)
    run = tmp_path / "run"
    cmd = [sys.executable, "-c", LIMITED, *_array_cmd(gin_file, run, 40, "--gin.CHECKPOINT_EVERY=5")]
    result = subprocess.run(cmd, cwd=subproc.REPO, env=subproc.env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "cannot write checkpoint" in line]
    assert len(errors) == 1 and errors[0].startswith("train: error: "), result.stderr[-3000:]
    assert f"step 5 to {run / 'checkpoints'}" in errors[0] and "free on that disk" in errors[0]
    assert "File too large" in errors[0]
    assert "Traceback" not in result.stderr and "ERROR" not in result.stderr, result.stderr[-3000:]
    assert "Event loop is closed" not in result.stderr
    assert len(helpers.losses(run)) <= 10          # stopped by the next save at the latest
    assert checkpoints.latest_step(run) is None              # nothing half-written is a checkpoint
    resumed = subproc.run(_array_cmd(gin_file, run, 6))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert checkpoints.latest_step(run) == 6


def test_too_little_free_space_stops_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_saves, "free_bytes", lambda path: 1000)
    with pytest.raises(errors.CheckpointSaveError) as err:
        helpers.run(tmp_path / "run", steps=4, checkpoint_every=2)
    msg = str(err.value)
    assert "cannot write checkpoint step 2" in msg and "1000 B free on that disk" in msg
    assert "needs about" in msg
    assert not list((tmp_path / "run" / "checkpoints").glob("*tmp*"))
    assert checkpoints.latest_step(tmp_path / "run") is None
