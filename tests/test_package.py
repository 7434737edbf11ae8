"""Importing protlm on a machine without TPU chips keeps an installed libtpu quiet."""
import os
import subprocess
import sys

import libtpu  # noqa: F401  the `tpu` extra is part of the test set-up (make test installs it)


def test_libtpu_prints_nothing_without_tpu_chips():
    env = {k: v for k, v in os.environ.items() if not k.startswith("TPU_")}
    for name in ("XLA_FLAGS", "JAX_PLATFORMS"):   # the suite's conftest pins cpu: jax's default here
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-c", "import protlm, jax; print(jax.devices())"],
                         env=env, capture_output=True, text=True, timeout=120, check=True)
    assert "CpuDevice" in out.stdout
    assert "TPU_ACCELERATOR_TYPE" not in out.stderr and "TPU_WORKER_HOSTNAMES" not in out.stderr, \
        out.stderr


def test_without_protlm_libtpu_is_the_noise_source():
    """The test above can fail: jax alone prints libtpu's requests here (no TPU attached)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TPU_")}
    for name in ("XLA_FLAGS", "JAX_PLATFORMS"):   # the suite's conftest pins cpu: jax's default here
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"],
                         env=env, capture_output=True, text=True, timeout=120, check=True)
    assert "TPU_WORKER_HOSTNAMES" in out.stderr
