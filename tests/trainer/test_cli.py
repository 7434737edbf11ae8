"""`python -m protlm.train`: flags, gin tiers, and a run from arrays through the CLI."""
import json

import gin
import numpy as np
import pytest

from protlm import checkpoints, train
from tests.trainer.synthetic import t5_arrays

ARRAY_GIN = """
from __gin__ import dynamic_registration
from protlm import models
from protlm import trainer
from protlm.data import batch_sources
include 'gin/models/prot_t5_tiny.gin'
include 'gin/runs/pretrain.gin'
MIXTURE_OR_TASK_NAME = 'unused'
TASK_FEATURE_LENGTHS = {{'inputs': 16, 'targets': 16}}
BATCH_SIZE = 8
LOG_EVERY = 1
EVAL_EVERY = 0
trainer.train.data = @batch_sources.ArraySource()
batch_sources.ArraySource.train = '{npz}'
"""


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config(clear_constants=True)
    yield
    gin.clear_config(clear_constants=True)


def write_array_gin(tmp_path, **extra) -> str:
    np.savez(tmp_path / "train.npz", **t5_arrays(64, 16, seed=1))
    text = ARRAY_GIN.format(npz=tmp_path / "train.npz")
    text += "".join(f"{k} = {v}\n" for k, v in extra.items())
    (tmp_path / "arrays.gin").write_text(text)
    return str(tmp_path / "arrays.gin")


def test_dry_run_flags_need_each_other():
    base = ["--gin_file=a.gin"]
    for bad in (["--topology=v4:2x2x1"], ["--dry_run", "--num_slices=2"],
                ["--dry_run", "--topology=v4:2x2x1", "--dry_run_devices=8"]):
        with pytest.raises(SystemExit):
            train.parse_flags(base + bad)
    args = train.parse_flags(base + ["--dry_run", "--topology=v5p:4x4x4", "--num_slices=2",
                                     "--dry_run_report=r.json"])
    assert (args.topology, args.num_slices, args.dry_run_report) == ("v5p:4x4x4", 2, "r.json")


def test_gin_dot_flags_become_bindings():
    args = train.parse_flags(["--gin_file=a.gin", "--gin_file=b.gin", "--gin.MODEL_DIR='x'",
                              "--gin_bindings=TRAIN_STEPS = 3", "--gin.BATCH_SIZE=4"])
    assert args.gin_file == ["a.gin", "b.gin"]
    assert args.gin_bindings == ["TRAIN_STEPS = 3", "MODEL_DIR='x'", "BATCH_SIZE=4"]
    with pytest.raises(SystemExit):
        train.parse_flags(["--gin.MODEL_DIR='x'"])          # no gin file


def test_pretrain_requires_its_macros(tmp_path):
    with pytest.raises(Exception, match="MODEL_DIR|REQUIRED|required"):
        train.train(["--gin_file=gin/models/prot_t5_tiny.gin", "--gin_file=gin/runs/pretrain.gin",
                     "--gin.MIXTURE_OR_TASK_NAME='prott5_span_denoising'",
                     "--gin.TASK_FEATURE_LENGTHS={'inputs': 8, 'targets': 8}",
                     "--gin.TRAIN_STEPS=1"])


@pytest.mark.parametrize("gin_file", ["quickstart.gin", "prot_t5_xl.gin", "prot_t5_xxl.gin",
                                      "prot_bert.gin", "prot_bert_2048.gin"])
def test_experiment_files_parse(gin_file, tmp_path, monkeypatch):
    # from another directory that has a `runs/` folder (a namespace package for gin's reader)
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    gin.add_config_file_search_path(str(train.REPO_ROOT))
    gin_file = "gin/" + gin_file
    gin.parse_config_files_and_bindings([gin_file], ["MODEL_DIR = '/tmp/x'",
                                                     "FASTA_PATTERN = '/tmp/x.fasta'"])
    assert gin.query_parameter("%TRAIN_STEPS") > 0
    assert gin.query_parameter("%BATCH_SIZE") > 0


def test_train_from_arrays_through_the_cli(tmp_path):
    gin_file = write_array_gin(tmp_path)
    result = train.train([f"--gin_file={gin_file}", f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
                          "--gin.TRAIN_STEPS=3", "--gin.NUM_DEVICES=1"])
    assert result["status"] == "done" and result["step"] == 3
    assert checkpoints.latest_step(tmp_path / "run") == 3
    assert json.loads((tmp_path / "run" / "config.json").read_text())["family"] == "t5"
    assert list((tmp_path / "run" / "tensorboard" / "train").glob("events.*"))
    assert "trainer.train.model_dir" in (tmp_path / "run" / "config.gin").read_text()
