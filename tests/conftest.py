"""Test setup: 8 fake CPU devices before jax is imported, and the shared data root."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pathlib  # noqa: E402
import tempfile  # noqa: E402

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
