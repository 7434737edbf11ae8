"""Test setup: 8 fake CPU devices before jax is imported, XLA tuned for compile time, one
compilation cache per session, and the shared data root."""
import os
import pathlib
import shutil
import tempfile

# The suite compiles far more than it computes (tiny models, a few steps each): XLA's CPU backend
# at optimization level 0 compiles about a third faster (the same HLO programs, fewer LLVM
# passes; every tolerance of the suite holds); `tests/trainer/subproc.py` passes them to the
# `python -m protlm.*` runs the tests start.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=8"
if TEST_XLA_FLAGS not in _flags:
    _flags += f" {TEST_XLA_FLAGS}"
os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# One persistent compilation cache per test session (xdist workers and subprocesses inherit the
# variable): a resumed run, a rerun after kill -9 and its uninterrupted reference compile the same
# train step once. Started empty, removed at the end; never the user's own cache.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="protlm-test-jax-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

# FASTA globs given to the seqio tasks are converted to shards once, into this cache (keyed by the
# files' paths, sizes and mtimes): a per-user temporary directory, not the user's ~/.cache.
os.environ.setdefault("PROTLM_DATA_CACHE", os.path.join(tempfile.gettempdir(), f"protlm-test-data-{os.getuid()}"))

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
# Data root: $PROTLM_DATA_ROOT or ../shared/data beside the checkout.
DATA_ROOT = pathlib.Path(os.environ.get("PROTLM_DATA_ROOT", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_root() -> pathlib.Path:
    if not DATA_ROOT.exists():
        pytest.fail(f"shared data not found at {DATA_ROOT}; set PROTLM_DATA_ROOT")
    return DATA_ROOT


@pytest.fixture(scope="session")
def pretraining_fasta(data_root) -> list[str]:
    return sorted(str(p) for p in (data_root / "pretraining" / "combined_dedup").glob("*.fasta.gz"))


def pytest_unconfigure(config):
    """The session's compilation cache goes with the session (the xdist controller removes it)."""
    if _OWN_CACHE and not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
