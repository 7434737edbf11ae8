"""Settings a run cannot use are refused before any work, in one line naming the setting and the
fix (issue 15 items 10, 11, 12): `train.main` returns 2."""
import gin
import pytest

from protlm import train
from tests.trainer.test_cli import write_array_gin


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config(clear_constants=True)
    yield
    gin.clear_config(clear_constants=True)


def _main(tmp_path, *flags, **macros):
    gin_file = write_array_gin(tmp_path, TRAIN_STEPS=3, **macros)
    return train.main([f"--gin_file={gin_file}", f"--gin.MODEL_DIR='{tmp_path / 'run'}'", *flags])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("train: error: ")]
    assert len(lines) == 1, err[-3000:]
    assert "Traceback" not in err
    return lines[0]


def test_a_misspelled_macro_names_the_closest_one(tmp_path, capsys):
    assert _main(tmp_path, "--gin.TRAIN_STEP=2", "--gin.NUM_DEVICES=1") == 2
    line = _error_line(capsys)
    assert "TRAIN_STEP" in line and "did you mean TRAIN_STEPS?" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_misspelled_macro_in_gin_bindings_too(tmp_path, capsys):
    assert _main(tmp_path, "--gin_bindings=EVAL_EVREY = 5", "--gin.NUM_DEVICES=1") == 2
    assert "did you mean EVAL_EVERY?" in _error_line(capsys)


@pytest.mark.parametrize("steps", [0, -5])
def test_non_positive_train_steps_are_refused(tmp_path, capsys, steps):
    assert _main(tmp_path, f"--gin.TRAIN_STEPS={steps}", "--gin.NUM_DEVICES=1") == 2
    line = _error_line(capsys)
    assert f"TRAIN_STEPS must be a positive number of steps, got {steps}" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_batch_size_not_divisible_by_the_data_parallel_devices(tmp_path, capsys):
    # 8 CPU devices (conftest), mesh data=-1: 8-way data parallel.
    assert _main(tmp_path, "--gin.BATCH_SIZE=30") == 2
    line = _error_line(capsys)
    assert "BATCH_SIZE=30" in line and "{'data': 8, 'fsdp': 1, 'model': 1}" in line
    assert "nearest valid sizes: 24 or 32" in line


def test_batch_size_with_accumulation(tmp_path, capsys):
    assert _main(tmp_path, "--gin.BATCH_SIZE=6", "--gin.ACCUM_STEPS=4", "--gin.NUM_DEVICES=2") == 2
    line = _error_line(capsys)
    assert "ACCUM_STEPS=4" in line and "{'data': 2, 'fsdp': 1, 'model': 1}" in line
    assert "nearest valid sizes: 4 or 8" in line
