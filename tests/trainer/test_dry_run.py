"""Full-size train steps lower and compile on an abstract 8-device mesh, no weights allocated."""
import re

import pytest

from tests.trainer import subproc

CASES = {
    # gin file, extra flags, expected parameter count (PROTTRANS_FACTS section 1)
    "prot_t5_xl": ("gin/prot_t5_xl.gin", [], 2_818_830_336),
    "prot_t5_xxl": ("gin/prot_t5_xxl.gin", ["--gin.MESH_MODEL=8"], 11_274_553_344),
    "prot_bert": ("gin/prot_bert.gin", [], 419_933_214),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_dry_run_compiles_full_size_step(tmp_path, name):
    gin_file, extra, num_params = CASES[name]
    proc = subproc.run(["protlm.train", f"--gin_file={gin_file}",
                        f"--gin.MODEL_DIR='{tmp_path}'", "--gin.FASTA_PATTERN='unused'",
                        "--gin.BATCH_SIZE=16", "--dry_run", "--dry_run_devices=8", *extra],
                       devices=1, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = re.search(r"dry run OK on mesh (\{.*?\}): ([\d.]+) B params; per device: params "
                  r"([\d.]+) GiB, optimizer state ([\d.]+) GiB", proc.stdout)
    assert m, proc.stdout[-2000:]
    assert abs(float(m.group(2)) * 1e9 - num_params) < 1e6
    params_gib, opt_gib = float(m.group(3)), float(m.group(4))
    # sharded 8 ways (modulo small replicated vectors): well under the full fp32 size
    assert 0 < params_gib < num_params * 4 / 2**30 / 4
    assert opt_gib > 0
    assert not (tmp_path / "checkpoints").exists()          # nothing was trained or written
