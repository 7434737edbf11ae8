"""Reads the tensors of a Hugging Face model directory one at a time.

Handles the layouts Rostlab and transformers write: `model.safetensors`,
`model.safetensors.index.json` + shards, `pytorch_model.bin`, `pytorch_model.bin.index.json` + shards,
in float32, float16 or bfloat16. safetensors files are opened lazily with the `safetensors` library
(numpy framework, no torch needed); `.bin` files need torch and are memory-mapped when possible.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator

import numpy as np

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_SINGLE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"


def _torch_to_numpy(tensor) -> np.ndarray:
    import torch  # noqa: PLC0415 (optional dependency, only for .bin files)

    if tensor.dtype == torch.bfloat16:
        import ml_dtypes  # noqa: PLC0415
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


class HFWeights:
    """Lazy `name -> np.ndarray` view over the weight files of one HF model directory.

    Args:
      hf_dir: the directory holding the weights (and config.json).

    Raises:
      FileNotFoundError: when no known weights file is there.
    """

    def __init__(self, hf_dir: str):
        self.hf_dir = hf_dir
        self._file_of: dict[str, str] = {}
        self._safe_handles: dict = {}
        self._bin_cache: dict[str, dict] = {}
        if os.path.isfile(os.path.join(hf_dir, SAFE_INDEX)):
            self._load_index(SAFE_INDEX)
        elif os.path.isfile(os.path.join(hf_dir, SAFE_SINGLE)):
            self._index_safetensors(SAFE_SINGLE)
        elif os.path.isfile(os.path.join(hf_dir, BIN_INDEX)):
            self._load_index(BIN_INDEX)
        elif os.path.isfile(os.path.join(hf_dir, BIN_SINGLE)):
            self._index_bin(BIN_SINGLE)
        else:
            raise FileNotFoundError(
                f"{hf_dir}: no weights found; expected one of {SAFE_SINGLE}, {SAFE_INDEX}, {BIN_SINGLE}, "
                f"{BIN_INDEX} (a Hugging Face model directory as written by save_pretrained)")

    def _load_index(self, index_name: str) -> None:
        path = os.path.join(self.hf_dir, index_name)
        try:
            with open(path, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{path}: not a valid index file ({e}); it needs a 'weight_map' object") from e
        for file in sorted(set(weight_map.values())):
            if not os.path.isfile(os.path.join(self.hf_dir, file)):
                raise FileNotFoundError(f"{path} names shard {file}, which is missing from {self.hf_dir}")
        self._file_of = dict(weight_map)

    def _index_safetensors(self, file: str) -> None:
        self._file_of.update({name: file for name in self._safe(file).keys()})

    def _index_bin(self, file: str) -> None:
        self._file_of.update({name: file for name in self._bin(file)})

    def _safe(self, file: str):
        if file not in self._safe_handles:
            from safetensors import safe_open  # noqa: PLC0415

            self._safe_handles[file] = safe_open(os.path.join(self.hf_dir, file), framework="numpy")
        return self._safe_handles[file]

    def _bin(self, file: str) -> dict:
        if file not in self._bin_cache:
            try:
                import torch  # noqa: PLC0415
            except ImportError as e:
                raise ImportError(f"{self.hf_dir}/{file}: reading pytorch_model.bin needs torch "
                                  "(pip install 'protlm[hf]'), or convert it to safetensors") from e
            path = os.path.join(self.hf_dir, file)
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
                state = torch.load(path, map_location="cpu", weights_only=True)
            self._bin_cache[file] = state
        return self._bin_cache[file]

    def keys(self) -> list[str]:
        """All tensor names, sorted."""
        return sorted(self._file_of)

    def __contains__(self, name: str) -> bool:
        return name in self._file_of

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __getitem__(self, name: str) -> np.ndarray:
        """The tensor `name` as a numpy array in its stored dtype."""
        if name not in self._file_of:
            raise KeyError(f"{self.hf_dir}: no tensor named {name!r}")
        file = self._file_of[name]
        if file.endswith(".safetensors"):
            return self._safe(file).get_tensor(name)
        return _torch_to_numpy(self._bin(file)[name])

