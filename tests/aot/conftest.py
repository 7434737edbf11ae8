"""TPU-compiler tests need libtpu (the `tpu` extra; `make test` installs it). Missing is a
failure, never a silent skip."""
import pytest


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
