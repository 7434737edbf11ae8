"""protlm: ProtTrans protein language models in JAX/Flax."""
import glob as _glob
import importlib.util as _importlib_util
import os as _os

__version__ = "0.1.0"

_GOOGLE_PCI_VENDOR_ID = "0x1ae0"


def _quiet_libtpu_without_tpu() -> None:
    """Keeps libtpu (the optional ``tpu`` extra, installed for ``--dry_run --topology``) quiet on
    a machine without TPU chips.

    jax loads an installed libtpu with its backends; with no TPU attached libtpu prints five
    lines asking for ``TPU_ACCELERATOR_TYPE`` / ``TPU_WORKER_HOSTNAMES`` on every start, which a
    user cannot act on. Where no Google PCI device is present and neither variable is set, set
    the values a compile-only process uses (protlm.aot.topology sets the same). On a TPU VM
    (chips present) nothing is changed and libtpu discovers the slice itself.
    """
    if "TPU_ACCELERATOR_TYPE" in _os.environ or "TPU_WORKER_HOSTNAMES" in _os.environ:
        return
    if _importlib_util.find_spec("libtpu") is None:
        return
    for vendor in _glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(vendor, encoding="ascii") as f:
                if f.read().strip() == _GOOGLE_PCI_VENDOR_ID:
                    return
        except OSError:
            continue
    _os.environ["TPU_ACCELERATOR_TYPE"] = "v4-8"
    _os.environ["TPU_WORKER_HOSTNAMES"] = "localhost"
    _os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")


_quiet_libtpu_without_tpu()
