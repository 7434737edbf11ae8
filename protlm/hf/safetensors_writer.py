"""Streaming safetensors writer: one tensor in memory at a time, sharded above a size threshold.

`safetensors.numpy.save_file` needs every tensor in one dict, which for an 11 B parameter model
would hold the converted weights beside the originals. The format is a little-endian u64 header
length, a JSON header `{name: {dtype, shape, data_offsets}}` (padded with spaces to 8 bytes) and the
raw tensor bytes in header order, so knowing every shape and dtype up front is enough to write the
header first and stream the bytes. Files are read back with the `safetensors` library in tests.

Sharded output follows the transformers layout: `model-00001-of-00003.safetensors`, ... plus
`model.safetensors.index.json` (`{"metadata": {"total_size": N}, "weight_map": {name: file}}`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import struct
from collections.abc import Callable, Sequence

import ml_dtypes
import numpy as np

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3  # transformers' default `max_shard_size="5GB"` order.

_DTYPE_CODES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(ml_dtypes.bfloat16): "BF16",
    np.dtype(np.float64): "F64",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one tensor to write."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def dtype_code(dtype) -> str:
    """safetensors dtype string ("F32", "F16", "BF16", ...) of a numpy dtype."""
    dtype = np.dtype(dtype)
    if dtype not in _DTYPE_CODES:
        raise ValueError(f"dtype {dtype} has no safetensors code here; use one of "
                         f"{sorted(str(d) for d in _DTYPE_CODES)}")
    return _DTYPE_CODES[dtype]


def parse_size(size: str | int) -> int:
    """Parses "5GB", "500MB", "10KiB" or a byte count into bytes (decimal units as in transformers)."""
    if isinstance(size, int):
        return size
    text = size.strip().upper()
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def plan_shards(specs: Sequence[TensorSpec], max_shard_bytes: int) -> list[list[TensorSpec]]:
    """Splits `specs` (in order) into shards of at most `max_shard_bytes` (a bigger tensor stands alone)."""
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        if shards[-1] and size + spec.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += spec.nbytes
    return shards


def _header(specs: Sequence[TensorSpec], metadata: dict[str, str]) -> bytes:
    header: dict = {"__metadata__": dict(metadata)}
    offset = 0
    for spec in specs:
        header[spec.name] = {"dtype": dtype_code(spec.dtype), "shape": list(spec.shape),
                             "data_offsets": [offset, offset + spec.nbytes]}
        offset += spec.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write_safetensors_file(path: str, specs: Sequence[TensorSpec],
                           produce: Callable[[str], np.ndarray],
                           metadata: dict[str, str] | None = None,
                           on_tensor: Callable[[TensorSpec], None] | None = None) -> None:
    """Writes one safetensors file, calling `produce(name)` for each tensor in turn.

    Args:
      path: output file (written in place; callers write into a temporary directory).
      specs: the tensors, in file order.
      produce: returns the array for a name; it must match the spec's shape and dtype exactly.
      metadata: string metadata (`{"format": "pt"}` is what transformers requires).
      on_tensor: called after each tensor is written (progress bars).
    """
    metadata = {"format": "pt"} if metadata is None else metadata
    with open(path, "wb") as f:
        f.write(_header(specs, metadata))
        for spec in specs:
            array = np.asarray(produce(spec.name))
            if array.shape != tuple(spec.shape) or array.dtype != np.dtype(spec.dtype):
                raise ValueError(f"{path}: tensor {spec.name} produced {array.dtype}{list(array.shape)}, "
                                 f"expected {np.dtype(spec.dtype)}{list(spec.shape)}")
            array = np.ascontiguousarray(array)
            if array.dtype.byteorder == ">":
                array = array.byteswap().view(array.dtype.newbyteorder("<"))
            array.tofile(f)  # raw bytes, no second copy
            del array
            if on_tensor is not None:
                on_tensor(spec)


def write_safetensors(out_dir: str, specs: Sequence[TensorSpec], produce: Callable[[str], np.ndarray],
                      max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                      metadata: dict[str, str] | None = None,
                      on_tensor: Callable[[TensorSpec], None] | None = None) -> list[str]:
    """Writes `model.safetensors`, or shards + `model.safetensors.index.json` above `max_shard_bytes`.

    Returns:
      The file names written (relative to `out_dir`).
    """
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate tensor names: {sorted({n for n in names if names.count(n) > 1})}")
    shards = plan_shards(specs, max_shard_bytes)
    if len(shards) == 1:
        write_safetensors_file(os.path.join(out_dir, SAFE_WEIGHTS_NAME), specs, produce, metadata, on_tensor)
        return [SAFE_WEIGHTS_NAME]
    files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for file, shard in zip(files, shards):
        write_safetensors_file(os.path.join(out_dir, file), shard, produce, metadata, on_tensor)
        weight_map.update({spec.name: file for spec in shard})
    index = {"metadata": {"total_size": sum(s.nbytes for s in specs)}, "weight_map": weight_map}
    with open(os.path.join(out_dir, SAFE_WEIGHTS_INDEX_NAME), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")
    return files + [SAFE_WEIGHTS_INDEX_NAME]
