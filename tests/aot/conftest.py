"""TPU-compiler tests need libtpu (the `tpu` extra; `make test` installs it), GPU-compiler
tests jax's CUDA plugin (`make install` puts it in .venv/cuda_aot, off the default path: on a
machine without a GPU the plugin logs a driver probe whenever jax starts). Missing is a failure,
never a silent skip."""
import os
import pathlib
import sys

import pytest

# Where `make install` puts jax's CUDA PJRT plugin (pip install --target); CUDA_AOT_PATH overrides.
CUDA_AOT_PATH = pathlib.Path(os.environ.get("CUDA_AOT_PATH", pathlib.Path(sys.prefix) / "cuda_aot"))


@pytest.fixture(scope="session")
def libtpu():
    try:
        import libtpu as module  # noqa: F401
    except ImportError:
        pytest.fail('libtpu is not installed: pip install -e ".[tpu]" (make test does)')
    return module


@pytest.fixture(scope="session")
def v4_devices(libtpu):
    """The 4 devices of a TPU v4-8 slice (2x2x1 chips, megacore)."""
    from protlm.aot import topology
    return topology.topology_devices("v4:2x2x1")


@pytest.fixture(scope="session")
def cuda_aot_env():
    """Environment additions that put jax's CUDA plugin on the path of a subprocess."""
    if not (CUDA_AOT_PATH / "jax_plugins" / "xla_cuda12").is_dir():
        pytest.fail(f"jax's CUDA plugin is not in {CUDA_AOT_PATH}: make install puts it there "
                    "(pip install --no-deps --target <dir> jax-cuda12-plugin==<jaxlib version> "
                    "jax-cuda12-pjrt==<jaxlib version>)")
    return {"PYTHONPATH": str(CUDA_AOT_PATH)}
