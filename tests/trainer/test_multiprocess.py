"""Two processes x 4 CPU devices (jax.distributed on localhost) = one process x 8 devices."""
import socket

import numpy as np
import pytest

from tests.trainer import helpers, subproc
from tests.trainer.test_cli import write_array_gin


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    gin_file = write_array_gin(tmp_path, MESH_DATA=4, MESH_MODEL=2)
    common = ["protlm.train", f"--gin_file={gin_file}", "--gin.TRAIN_STEPS=4"]
    one = subproc.run(common + [f"--gin.MODEL_DIR='{tmp_path / 'one'}'"], devices=8)
    assert one.returncode == 0, one.stderr[-3000:]
    port = _free_port()
    procs = [subproc.popen(common + [f"--gin.MODEL_DIR='{tmp_path / 'two'}'",
                                     f"--coordinator_address=localhost:{port}",
                                     "--num_processes=2", f"--process_id={i}"],
                           devices=4, log_path=tmp_path / f"p{i}.log") for i in range(2)]
    for i, p in enumerate(procs):
        assert p.wait(timeout=600) == 0, (tmp_path / f"p{i}.log").read_text()[-3000:]
    np.testing.assert_allclose(helpers.losses(tmp_path / "two"), helpers.losses(tmp_path / "one"),
                               rtol=1e-5)
    assert len(helpers.losses(tmp_path / "one")) == 4
