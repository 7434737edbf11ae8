"""Reads the tensors of a Hugging Face model directory one at a time.

Handles the layouts Rostlab and transformers write: `model.safetensors`,
`model.safetensors.index.json` + shards, `pytorch_model.bin`, `pytorch_model.bin.index.json` + shards,
in float32, float16 or bfloat16. safetensors files are opened lazily with the `safetensors` library
(numpy framework, no torch needed); `.bin` files need torch and are memory-mapped when possible.
They are read with `weights_only=True` only: a file torch's safe loader refuses is reported as
unreadable (`CorruptWeightsError`, naming the file), never loaded with code execution allowed.
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator

import numpy as np

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_SINGLE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"


class CorruptWeightsError(ValueError):
    """A weights file that cannot be read (truncated, damaged, not the format its name says)."""


def _first_line(exc: BaseException) -> str:
    """The cause in one line, without torch's advice to disable its safe loader."""
    text = str(exc).strip()
    if "weights_only" in text or "Weights only load failed" in text:
        return "it holds objects other than tensors, which the safe loader does not run"
    line = text.splitlines()[0] if text else type(exc).__name__
    return line.split(". This is an internal")[0]


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

            path = os.path.join(self.hf_dir, file)
            try:
                self._safe_handles[file] = safe_open(path, framework="numpy")
            except Exception as e:  # safetensors raises its own SafetensorError (not an OSError)
                if isinstance(e, FileNotFoundError):
                    raise
                raise CorruptWeightsError(f"{path}: not a readable safetensors file ({_first_line(e)}); "
                                          "download or export it again") from None
        return self._safe_handles[file]

    def _bin(self, file: str) -> dict:
        if file not in self._bin_cache:
            try:
                import torch  # noqa: PLC0415
            except ImportError as e:
                raise ImportError(f"{self.hf_dir}/{file}: reading pytorch_model.bin needs torch "
                                  "(pip install 'protlm[hf]'), or convert it to safetensors") from e
            path = os.path.join(self.hf_dir, file)
            with warnings.catch_warnings(record=True) as caught:   # re-issued when the file is good
                warnings.simplefilter("always")
                try:
                    try:
                        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                    except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
                        state = torch.load(path, map_location="cpu", weights_only=True)
                except FileNotFoundError:
                    raise
                except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
                    raise CorruptWeightsError(f"{path}: not a readable PyTorch checkpoint ({_first_line(e)}); "
                                              "download it again or use its model.safetensors") from None
            for w in caught:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            if not isinstance(state, dict):
                raise CorruptWeightsError(f"{path}: holds a {type(state).__name__}, not a state dict of "
                                          "tensors; download it again or use its model.safetensors")
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
            try:
                return self._safe(file).get_tensor(name)
            except CorruptWeightsError:
                raise
            except Exception as e:  # a damaged data section
                raise CorruptWeightsError(f"{os.path.join(self.hf_dir, file)}: tensor {name!r} is unreadable "
                                          f"({_first_line(e)}); download or export it again") from None
        return _torch_to_numpy(self._bin(file)[name])

