"""The devices of a TPU slice without the hardware: libtpu's topology descriptions.

``jax.experimental.topologies.get_topology_desc`` returns abstract devices (kind, chip
coordinates, slice index) of any TPU slice; a mesh of them lets ``jax.jit(...).lower(...)
.compile()`` run the real TPU compiler (MaxText's ``train_compile.py`` approach). It needs
Google's ``libtpu`` wheel, the optional ``tpu`` extra of this package.
"""
from __future__ import annotations

import os
import re

INSTALL_HINT = ('install the TPU compiler: pip install -e ".[tpu]"  '
                '(= pip install "jax[tpu]==<your jax version>", which pulls the matching libtpu)')
# name in --topology -> (libtpu's chip config, a TPU_ACCELERATOR_TYPE of that generation).
# v4 and v5p chips are "megacore": their two TensorCores form one JAX device.
GENERATIONS = {
    "v2": ("default", "v2-8"),
    "v3": ("default", "v3-8"),
    "v4": ("megacore", "v4-8"),
    "v5e": ("default", "v5litepod-4"),
    "v5p": ("megacore", "v5p-8"),
    "v6e": ("default", "v6e-4"),
}
_NAME = re.compile(r"^(v\d[a-z]?):(\d+(?:x\d+){1,2})$")


def parse_topology(name: str) -> tuple[str, tuple[int, ...]]:
    """``'v5p:4x4x4'`` -> ``('v5p', (4, 4, 4))``.

    Raises:
      ValueError: naming the accepted form when ``name`` is not one.
    """
    m = _NAME.match(name.strip())
    if not m or m.group(1) not in GENERATIONS:
        raise ValueError(f"--topology={name!r}: expected GENERATION:CHIPS_PER_AXIS with "
                         f"GENERATION one of {sorted(GENERATIONS)}, e.g. v3:16x32 (v3-1024), "
                         "v4:4x4x4 (v4-128), v5p:4x4x4 (v5p-128), v5e:16x16 (v5e-256)")
    return m.group(1), tuple(int(d) for d in m.group(2).split("x"))


def require_libtpu() -> None:
    """Raises RuntimeError with the install command when libtpu is not importable."""
    try:
        import libtpu  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError as e:
        raise RuntimeError(f"compiling for a TPU topology needs libtpu: {INSTALL_HINT}") from e


def topology_devices(name: str, num_slices: int = 1) -> list:
    """The abstract devices of ``num_slices`` slices of topology ``name``, in id order.

    Sets ``TPU_ACCELERATOR_TYPE`` / ``TPU_WORKER_HOSTNAMES`` (unless already set) so libtpu
    does not probe for TPU hardware, and ``ALLOW_MULTIPLE_LIBTPU_LOAD`` so that concurrent
    compiling processes do not wait on libtpu's lockfile; the process keeps its CPU backend.
    """
    generation, _ = parse_topology(name)
    if num_slices < 1:
        raise ValueError(f"--num_slices must be >= 1, got {num_slices}")
    require_libtpu()
    chip_config, accelerator = GENERATIONS[generation]
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", accelerator)
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    # libtpu takes /tmp/libtpu_lockfile for a real chip; compiling needs no exclusive access,
    # and several dry runs (or test workers) may compile at once.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
    desc = topologies.get_topology_desc(topology_name=name.strip(), platform="tpu",
                                        chip_config_name=chip_config, num_slices=num_slices)
    return sorted(desc.devices, key=lambda d: d.id)
