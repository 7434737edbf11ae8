"""Preset names -> configs, and config (de)serialisation for `config.json` beside checkpoints."""
from __future__ import annotations

import dataclasses
from typing import Any

from protlm.models import bert, t5

FAMILIES: dict[str, type] = {"t5": t5.T5Config, "bert": bert.BertConfig}
PRESETS: dict[str, tuple[str, dict]] = {
    **{name: ("t5", kw) for name, kw in t5.PRESETS.items()},
    **{name: ("bert", kw) for name, kw in bert.PRESETS.items()},
}


def get_config(name: str, **overrides: Any):
    """Preset config by name with field overrides.

    Example: `get_config('prot_t5_xl', scan_layers=True, remat_policy='minimal')`.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    family, kwargs = PRESETS[name]
    cls = FAMILIES[family]
    unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
    return cls(**{**kwargs, **overrides})


def family_of(config) -> str:
    for family, cls in FAMILIES.items():
        if isinstance(config, cls):
            return family
    raise TypeError(f"not a model config: {type(config).__name__}")


def config_to_dict(config) -> dict:
    """`{"family": "t5"|"bert", "config": {field: value}}` (JSON-serialisable)."""
    fields = dataclasses.asdict(config)
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
    return {"family": family_of(config), "config": fields}


def config_from_dict(d: dict):
    """Inverse of `config_to_dict`; unknown fields raise naming them."""
    if not isinstance(d, dict) or "family" not in d or "config" not in d:
        raise ValueError(f"expected {{'family': ..., 'config': {{...}}}}, got {d!r:.200}")
    if d["family"] not in FAMILIES:
        raise ValueError(f"unknown model family {d['family']!r}; known: {sorted(FAMILIES)}")
    cls = FAMILIES[d["family"]]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d["config"]) - names
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d["config"].items()}
    return cls(**kwargs)
