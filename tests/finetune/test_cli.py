"""`python -m protlm.finetune` end to end, and a fine-tuning run killed with -9 resumes exactly."""
from __future__ import annotations

import json

import pytest

from protlm import checkpoints
from tests.trainer import helpers, subproc

from .conftest import write_base


def _flags(model_dir, base_dir, data_root, steps):
    return ["--gin_file=gin/runs/finetune.gin", f"--gin.INIT_CHECKPOINT='{base_dir}'",
            f"--gin.MODEL_DIR='{model_dir}'", f"--gin.TRAIN_STEPS={steps}",
            f"--gin.DATA_ROOT='{data_root}'", "--gin.LIMIT=8", "--gin.MAX_LENGTH=48",
            "--gin.BATCH_SIZE=4", "--gin.CHECKPOINT_EVERY=2", "--gin.EVAL_EVERY=0",
            "--gin.LOG_EVERY=1", "--gin.MODE='lora'", "--gin.TASK='secondary_structure'"]


@pytest.mark.slow
def test_kill_9_then_rerun_equals_uninterrupted(tmp_path, data_root):
    base = tmp_path / "base"
    write_base(base, "prot_t5_tiny")
    full = subproc.run(["protlm.finetune", *_flags(tmp_path / "full", base, data_root, 10)])
    assert full.returncode == 0, full.stdout[-3000:] + full.stderr[-3000:]
    results = json.loads((tmp_path / "full" / "results.json").read_text())
    assert set(results["q3"]) == {"CASP12", "TS115", "CB513", "NEW364"} and results["step"] == 10
    assert (tmp_path / "full" / "results.md").read_text().count("| Q3 |") == 4

    split = tmp_path / "split"
    proc = subproc.popen(["protlm.train", *_flags(split, base, data_root, 10)],
                         log_path=tmp_path / "split.log")
    subproc.wait_for(lambda: (checkpoints.latest_step(split) or 0) >= 4, proc)
    proc.kill()                                   # SIGKILL: no chance to save anything
    proc.wait()
    assert checkpoints.latest_step(split) < 10
    resumed = subproc.run(["protlm.train", *_flags(split, base, data_root, 10)])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    a, _ = checkpoints.load_params(tmp_path / "full")
    b, _ = checkpoints.load_params(split)
    assert helpers.max_abs_diff(a, b) <= 1e-6
    b_factors = [v for k, v in _flat(a["lora"]) if k.endswith("/b")]
    assert max(float(abs(v).max()) for v in b_factors) > 1e-4      # LoRA trained (b starts at 0)


def _flat(tree, prefix=""):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}/{k}")
        else:
            yield f"{prefix}/{k}", v
