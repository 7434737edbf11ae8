"""Importing protlm on a machine without TPU chips keeps an installed libtpu quiet."""
import os
import subprocess
import sys

import libtpu  # noqa: F401  the `tpu` extra is part of the test set-up (make test installs it)


def _python_without_tpu_env(code: str) -> subprocess.CompletedProcess:
    """`python -c code` with no TPU_* variables and jax's default platforms (the suite's conftest
    pins cpu)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TPU_")}
    for name in ("XLA_FLAGS", "JAX_PLATFORMS"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, check=True)


def test_libtpu_prints_nothing_without_tpu_chips():
    out = _python_without_tpu_env("import protlm, jax; print(jax.devices())")
    assert "CpuDevice" in out.stdout
    assert "TPU_ACCELERATOR_TYPE" not in out.stderr and "TPU_WORKER_HOSTNAMES" not in out.stderr, \
        out.stderr


def test_without_protlm_libtpu_is_the_noise_source():
    """The test above can fail: jax alone prints libtpu's requests here (no TPU attached)."""
    out = _python_without_tpu_env("import jax; jax.devices()")
    assert "TPU_WORKER_HOSTNAMES" in out.stderr
