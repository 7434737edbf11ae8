"""ProtElectra in the trainer: mesh invariance of the joint objective, the discriminator's metrics
in train and eval logs, and a full-size dry run of the paper's recipe."""
import json
import re

import numpy as np
import pytest

from protlm import partitioning
from tests.trainer import helpers, subproc, test_trainer



def _train_log(model_dir) -> list[dict]:
    return [json.loads(line) for line in (model_dir / "metrics" / "train.jsonl").read_text().splitlines()]


def test_losses_do_not_depend_on_the_mesh_and_metrics_are_logged(tmp_path):
    ref = helpers.run(tmp_path / "one", "prot_electra_tiny", eval_every=5,
                      partition=partitioning.PartitionConfig(num_devices=1))
    assert ref["status"] == "done"
    base = _train_log(tmp_path / "one")
    assert len(base) == 5 and base[-1]["objective"] < base[0]["objective"]
    assert {"discriminator_accuracy", "unreplaced_share", "discriminator_loss"} <= set(base[0])
    assert ref["eval"]["masked_residue_loss"] > 0 and 0 < ref["eval"]["unreplaced_share"] < 1
    for name, partition in test_trainer.MIXED_MESH.items():
        helpers.run(tmp_path / name, "prot_electra_tiny", partition=partition)
        got = _train_log(tmp_path / name)
        for key in ("objective", "loss", "discriminator_loss"):
            np.testing.assert_allclose([m[key] for m in got], [m[key] for m in base], rtol=1e-5,
                                       err_msg=f"{key} on {name}")


@pytest.mark.slow
def test_dry_run_compiles_the_paper_recipe(tmp_path):
    proc = subproc.run(["protlm.train", "--gin_file=gin/prot_electra.gin",
                        f"--gin.MODEL_DIR='{tmp_path}'", "--gin.FASTA_PATTERN='unused'",
                        "--gin.BATCH_SIZE=16", "--dry_run", "--dry_run_devices=8"],
                       devices=1, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = re.search(r"dry run OK on mesh (\{.*?\}): ([\d.]+) B params", proc.stdout)
    assert m, proc.stdout[-2000:]
    assert abs(float(m.group(2)) * 1e9 - 444_152_607) < 1e6
    assert not (tmp_path / "checkpoints").exists()
