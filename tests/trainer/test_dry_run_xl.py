"""Full-size ProtTXL / ProtXLNet train steps (with the carried memory) compile on an abstract
8-device mesh, no weights allocated."""
import re

import pytest

from tests.trainer import subproc

CASES = {"prot_txl": ("gin/prot_txl.gin", 409_251_868),
         "prot_txl_bfd": ("gin/prot_txl_bfd.gin", 562_363_932),
         "prot_xlnet": ("gin/prot_xlnet.gin", 409_413_669)}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_dry_run_compiles_full_size_step(tmp_path, name):
    gin_file, num_params = CASES[name]
    proc = subproc.run(["protlm.train", f"--gin_file={gin_file}", f"--gin.MODEL_DIR='{tmp_path}'",
                        "--gin.FASTA_PATTERN='unused'", "--gin.BATCH_SIZE=16", "--dry_run",
                        "--dry_run_devices=8"], devices=1, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = re.search(r"dry run OK on mesh (\{.*?\}): ([\d.]+) B params; per device: params "
                  r"([\d.]+) GiB, optimizer state ([\d.]+) GiB", proc.stdout)
    assert m, proc.stdout[-2000:]
    assert abs(float(m.group(2)) * 1e9 - num_params) < 1e6
    assert 0 < float(m.group(3)) < num_params * 4 / 2**30 / 4   # sharded 8 ways (fsdp)
    assert not (tmp_path / "checkpoints").exists()
