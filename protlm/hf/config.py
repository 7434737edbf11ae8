"""Helpers shared by the families' `config.json` converters (`protlm/hf/<family>.py`).

Each family's exported dict carries every field the Rostlab config carries plus `model_type`,
`tie_word_embeddings`, the layer-norm epsilon and the dtype, so transformers rebuilds the exact
architecture. Reading accepts any config.json of the family and applies transformers' defaults for
missing optional fields; the fields that define the architecture are required (`require`).
"""
from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping


def transformers_version() -> dict[str, str]:
    try:
        return {"transformers_version": importlib.metadata.version("transformers")}
    except importlib.metadata.PackageNotFoundError:
        return {}


def dtype_fields(dtype: str) -> dict[str, str]:
    # transformers 4 reads `torch_dtype`, transformers 5 `dtype` (and still accepts the former).
    return {"torch_dtype": dtype, "dtype": dtype}




def require(d: Mapping, keys: tuple[str, ...], what: str) -> None:
    """Raises naming the architecture-defining keys `d` lacks."""
    missing = [k for k in keys if k not in d]
    if missing:
        raise ValueError(f"{what}: config.json lacks {missing}, which define the architecture")
