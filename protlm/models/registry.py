"""The one registry of model families, presets, and config (de)serialisation for `config.json`.

Adding a family is one line in `FAMILIES` (see docs/ARCHITECTURE.md, "How to add a family").
Everything else asks this module: `get_family(config)`, `get_model(config)`, `get_config(preset)`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protlm.models import albert_family, bert_family, t5_family, txl_family, xlnet_family
from protlm.models.family import Family

FAMILIES: dict[str, Family] = {f.name: f for f in (
    t5_family.FAMILY,
    bert_family.FAMILY,
    albert_family.FAMILY,
    txl_family.FAMILY,
    xlnet_family.FAMILY,
)}

PRESETS: dict[str, str] = {}   # preset name -> family name
for _family in FAMILIES.values():
    for _preset in _family.presets:
        if _preset in PRESETS:
            raise ValueError(f"preset {_preset!r} defined by families {PRESETS[_preset]!r} and "
                             f"{_family.name!r}")
        PRESETS[_preset] = _family.name


def family_by_name(name: str) -> Family:
    """The family registered as `name` ("t5", "bert", ...)."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]


def get_family(config) -> Family:
    """The family of a config dataclass (its `family_name`)."""
    name = getattr(type(config), "family_name", None)
    if name is None:
        raise TypeError(f"not a protlm model config: {type(config).__name__}")
    return family_by_name(name)


def get_model(config):
    """The Model object (loss, eval, score, predict, encode) of a config."""
    return get_family(config).model(config)


def get_config(name: str, **overrides: Any):
    """Preset config by name with field overrides.

    Example: `get_config('prot_t5_xl', scan_layers=True, remat_policy='minimal')`.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    family = FAMILIES[PRESETS[name]]
    return family.config(**{**family.presets[name], **overrides})


def family_for_hf_config(hf_config: Mapping, where: str = "config.json") -> Family:
    """The family whose Hugging Face conversion reads this config.json: by `model_type`, else (a
    config without one, as some Rostlab files are) the one family whose spec `recognizes` it."""
    model_type = hf_config.get("model_type")
    specs = {name: f.hf() for name, f in FAMILIES.items()}
    if model_type is not None:
        claim = [n for n, spec in specs.items() if model_type in spec.model_types]
        found = claim
        if len(claim) > 1:   # several families export one HF class: their `recognizes` decides
            found = [n for n in claim if specs[n].recognizes is None or specs[n].recognizes(hf_config)]
        if len(found) == 1:
            return FAMILIES[found[0]]
        if claim:
            raise ValueError(f"{where}: model_type {model_type!r} is read by families {claim}, "
                             f"and {len(found)} of them recognize this config ({found})")
        known = sorted(t for spec in specs.values() for t in spec.model_types)
        raise ValueError(f"{where}: model_type {model_type!r} is not supported; protlm imports "
                         f"{known}")
    matches = [n for n, spec in specs.items() if spec.recognizes is not None
               and spec.recognizes(hf_config)]
    if len(matches) != 1:
        raise ValueError(f"{where}: no model_type, and the fields identify "
                         f"{'no' if not matches else 'several'} protlm families {matches}; add "
                         "\"model_type\" to the config.json")
    return FAMILIES[matches[0]]


def config_to_dict(config) -> dict:
    """`{"family": name, "config": {field: value}}` (JSON-serialisable)."""
    import dataclasses  # noqa: PLC0415

    fields = dataclasses.asdict(config)
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
    return {"family": get_family(config).name, "config": fields}


def config_from_dict(d: Mapping):
    """Inverse of `config_to_dict`; unknown families or fields raise naming them."""
    if not isinstance(d, Mapping) or "family" not in d or "config" not in d:
        raise ValueError(f"expected {{'family': ..., 'config': {{...}}}}, got {d!r:.200}")
    family = family_by_name(d["family"])
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d["config"].items()}
    return family.config(**kwargs)
