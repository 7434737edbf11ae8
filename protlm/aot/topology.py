"""The devices of a TPU slice or a GPU host without the hardware: compile-only topologies.

``jax.experimental.topologies.get_topology_desc`` returns abstract devices (kind, chip
coordinates, slice index) of any TPU slice; a mesh of them lets ``jax.jit(...).lower(...)
.compile()`` run the real TPU compiler (MaxText's ``train_compile.py`` approach). It needs
Google's ``libtpu`` wheel, the optional ``tpu`` extra of this package.

The same call with ``platform="cuda"`` and an XLA:GPU target config (``gpu_targets/``) gives
the devices of N NVIDIA GPUs of one host for XLA:GPU's deviceless compilation; it needs jax's
CUDA PJRT plugin (``jax-cuda12-plugin``), not a GPU, a driver or the CUDA libraries.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import pathlib
import re
import sys
import tempfile

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
# name in --topology -> XLA:GPU target config (text proto in gpu_targets/), N GPUs of one host.
GPU_TARGETS = {"h100": "h100_sxm.txtpb", "h200": "h200_sxm.txtpb"}
GPU_TARGET_DIR = pathlib.Path(__file__).resolve().parent / "gpu_targets"
MAX_GPUS_PER_HOST = 8
_GPU_NAME = re.compile(r"^([a-z]\d+):(\d+)$")


def parse_topology(name: str) -> tuple[str, tuple[int, ...]]:
    """``'v5p:4x4x4'`` -> ``('v5p', (4, 4, 4))``.

    Raises:
      ValueError: naming the accepted form when ``name`` is not one.
    """
    m = _NAME.match(name.strip())
    if not m or m.group(1) not in GENERATIONS:
        raise ValueError(f"--topology={name!r}: expected GENERATION:CHIPS_PER_AXIS with "
                         f"GENERATION one of {sorted(GENERATIONS)}, e.g. v3:16x32 (v3-1024), "
                         "v4:4x4x4 (v4-128), v5p:4x4x4 (v5p-128), v5e:16x16 (v5e-256); or "
                         f"GPU:COUNT with GPU one of {sorted(GPU_TARGETS)}, e.g. h100:8")
    return m.group(1), tuple(int(d) for d in m.group(2).split("x"))


def parse_gpu_topology(name: str) -> tuple[str, int] | None:
    """``'h100:8'`` -> ``('h100', 8)``; None when ``name`` is not a GPU name (a TPU one).

    Raises:
      ValueError: for a GPU-shaped name with an unknown GPU or a count outside 1..8.
    """
    m = _GPU_NAME.match(name.strip())
    if not m or m.group(1) in GENERATIONS:
        return None
    gpu, count = m.group(1), int(m.group(2))
    if gpu not in GPU_TARGETS or not 1 <= count <= MAX_GPUS_PER_HOST:
        raise ValueError(f"--topology={name!r}: expected GPU:COUNT with GPU one of "
                         f"{sorted(GPU_TARGETS)} and 1 <= COUNT <= {MAX_GPUS_PER_HOST} (the GPUs "
                         "of one host), e.g. h100:1 or h200:8")
    return gpu, count


def platform(name: str, num_slices: int = 1) -> str:
    """``'gpu'`` or ``'tpu'``: which compiler ``--topology=name`` (x ``num_slices``) needs.

    Raises:
      ValueError: naming the accepted forms when ``name`` is neither kind, or when
        ``num_slices`` does not apply (< 1, or > 1 for a GPU host).
    """
    if parse_gpu_topology(name) is not None:
        if num_slices != 1:
            raise ValueError(f"--num_slices={num_slices}: multi-slice dry runs are for TPU "
                             f"topologies; {name} is one GPU host")
        return "gpu"
    parse_topology(name)
    if num_slices < 1:
        raise ValueError(f"--num_slices must be >= 1, got {num_slices}")
    return "tpu"


def gpu_target_config(gpu: str) -> str:
    """The XLA:GPU target config (text proto) of ``gpu`` (a key of ``GPU_TARGETS``)."""
    return (GPU_TARGET_DIR / GPU_TARGETS[gpu]).read_text(encoding="utf-8")


def gpu_memory_bytes(device_kind: str) -> int | None:
    """``device_memory_size`` of the target config whose device is ``device_kind``, or None."""
    for gpu in GPU_TARGETS:
        text = gpu_target_config(gpu)
        kind = re.search(r'device_description_str:\s*"([^"]*)"', text).group(1)
        if kind == device_kind:
            return int(re.search(r"device_memory_size:\s*(\d+)", text).group(1))
    return None


def require_cuda_plugin() -> None:
    """Raises RuntimeError with the install command when jax's CUDA plugin is not installed."""
    if not any(importlib.util.find_spec(f"jax_cuda{v}_plugin") for v in (12, 13)):
        version = importlib.metadata.version("jaxlib")
        raise RuntimeError(f"compiling for a GPU topology needs jax's CUDA plugin (no GPU, driver "
                           f"or CUDA libraries): pip install \"jax-cuda12-plugin=={version}\" "
                           f"\"jax-cuda12-pjrt=={version}\"")


def require_libtpu() -> None:
    """Raises RuntimeError with the install command when libtpu is not importable."""
    try:
        import libtpu  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError as e:
        raise RuntimeError(f"compiling for a TPU topology needs libtpu: {INSTALL_HINT}") from e


def topology_devices(name: str, num_slices: int = 1) -> list:
    """The abstract devices of ``num_slices`` slices of topology ``name``, in id order.

    A GPU name (``h100:8``) gives that many GPUs of one host (``num_slices`` must be 1). For a
    TPU name, sets ``TPU_ACCELERATOR_TYPE`` / ``TPU_WORKER_HOSTNAMES`` (unless already set) so libtpu
    does not probe for TPU hardware, and ``ALLOW_MULTIPLE_LIBTPU_LOAD`` so that concurrent
    compiling processes do not wait on libtpu's lockfile; the process keeps its CPU backend.
    """
    if platform(name, num_slices) == "gpu":
        return _gpu_devices(*parse_gpu_topology(name))
    generation, _ = parse_topology(name)
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


def _gpu_devices(gpu: str, count: int) -> list:
    """``count`` compile-only GPU devices of one host (XLA:GPU deviceless compilation).

    The CUDA plugin's "Could not find cuda drivers" lines are dropped (``quiet_cuda_plugin``).
    """
    require_cuda_plugin()
    from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
    with quiet_cuda_plugin():
        desc = topologies.get_topology_desc(platform="cuda", topology=f"1x1x{count}",
                                            target_config=gpu_target_config(gpu))
    return sorted(desc.devices, key=lambda d: d.id)


def quiet_cuda_plugin():
    """Context manager for what loads jax's CUDA plugin (jax's first backend use, a GPU
    topology): drops its "Could not find cuda drivers" log lines (C++, on fd 2), which a GPU-less
    machine prints for every CUDA library the plugin opens."""
    return _drop_stderr_lines("Could not find cuda drivers", "before absl::InitializeLog()")


@contextlib.contextmanager
def _drop_stderr_lines(*patterns: str):
    """The process's file descriptor 2 goes to a temporary file for the block; its lines are
    written back afterwards except those containing one of ``patterns`` (C++ logging writes to
    fd 2 directly, past ``sys.stderr``)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(True)
                    if not any(p in line for p in patterns)]
            if kept:
                os.write(2, "".join(kept).encode())
