"""A Hugging Face directory of a protlm family -> protlm params + config (-> orbax checkpoint).

Reads the Rostlab layout (`config.json` + `pytorch_model.bin` or safetensors, sharded or not,
float32 / float16 / bfloat16). Every tensor must map to a protlm param and every param must be
present: unknown or missing keys are errors listing them. Tied copies (`lm_head.weight`,
`*.embed_tokens.weight`, `cls.predictions.decoder.*`) must equal their canonical tensor. An
encoder-only T5 directory (`T5EncoderModel`, e.g. prot_t5_xl_half_uniref50-enc) imports as the
encoder-only param tree (`token_embedder` + `encoder`), which `Model.encode` and export accept.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
from collections.abc import Mapping

import numpy as np

from protlm.hf import mapping
from protlm.hf.spec import HFSpec, param_shapes
from protlm.hf.weights_reader import HFWeights
from protlm.models import registry

log = logging.getLogger(__name__)


def read_hf_config(hf_dir: str | os.PathLike) -> dict:
    """The parsed `config.json` of an HF model directory."""
    path = pathlib.Path(hf_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; --hf_dir must be a Hugging Face model directory "
                                "(config.json + weights), e.g. a snapshot of Rostlab/prot_t5_xl_uniref50")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e


def _check_keys(hf_dir, name: str, spec: HFSpec, config, part: str, weights: HFWeights,
                rules: list[mapping.Rule]) -> dict[str, str]:
    """Validates the key set; returns `{canonical key: key to read}` for canonicals absent."""
    present = set(weights.keys())
    expected = {r.hf_key for r in rules} | set(spec.constant_tensors(config, part))
    aliases = spec.tied_aliases(config, part)
    dropped = sorted(present & set(spec.dropped_keys))
    unknown = sorted(present - expected - set(aliases) - set(dropped))
    substitute = {}
    for canonical in sorted(expected - present):
        found = [a for a, c in aliases.items() if c == canonical and a in present]
        if found:
            substitute[canonical] = found[0]
    missing = sorted(expected - present - set(substitute))
    if unknown or missing:
        raise ValueError(
            f"{hf_dir}: weights do not match a {name} {spec.classes[part]} of the config.json "
            "architecture.\n"
            f"  unknown keys ({len(unknown)}): {unknown}\n  missing keys ({len(missing)}): {missing}")
    if dropped:
        log.warning("%s: dropping keys protlm has no place for: %s", hf_dir, dropped)
    return substitute


def _check_ties(hf_dir, spec: HFSpec, config, part: str, weights: HFWeights,
                substitute: Mapping[str, str]) -> None:
    for alias, canonical in spec.tied_aliases(config, part).items():
        source = substitute.get(canonical, canonical)
        if alias in weights and alias != source and not np.array_equal(weights[alias],
                                                                       weights[source]):
            raise ValueError(f"{hf_dir}: {alias} differs from {source}, but the model ties them "
                             "(an untied checkpoint is not supported for this config)")


def _check_constants(hf_dir, spec: HFSpec, config, part: str, weights: HFWeights) -> None:
    for key, value in spec.constant_tensors(config, part).items():
        if not np.array_equal(np.asarray(weights[key], np.float32), value):
            raise ValueError(f"{hf_dir}: {key} is not the constant protlm's model fixes (e.g. zero "
                             "segment terms of a Transformer-XL); this checkpoint uses a part of "
                             "the architecture protlm's model does not have")


def _check_derived(hf_dir, rule: mapping.Rule, source_key: str, param: np.ndarray,
                   tensor: np.ndarray) -> None:
    """`tensor` (HF `rule.hf_key`) must be `rule`'s conversion of the param read from
    `source_key` (exactly; to float32 rounding when the rule scales by a non power of two)."""
    want = rule.to_hf(param).astype(np.float32)
    got = np.asarray(tensor, np.float32)
    exact = rule.scale == 1.0 or float(np.log2(rule.scale)).is_integer()
    ok = np.array_equal(want, got) if exact else np.allclose(want, got, rtol=1e-6, atol=0.0)
    if not ok:
        raise ValueError(f"{hf_dir}: {rule.hf_key} must equal {source_key}"
                         f"{f' x {rule.scale:g}' if rule.scale != 1.0 else ''} (protlm's model ties "
                         f"them); max difference {float(np.max(np.abs(want - got))):.3g}")


def params_from_hf(hf_dir: str | os.PathLike, progress: bool = True,
                   **config_overrides) -> tuple[dict, object]:
    """Reads an HF directory into an unscanned float32 numpy param tree and a protlm config.

    Args:
      hf_dir: directory with config.json and the weights.
      progress: show a tqdm bar over the tensors read.
      **config_overrides: protlm config fields to set (e.g. `dtype="float32"`).

    Returns:
      (params, config); the params of the part the directory holds (an encoder-only T5:
      `token_embedder` + `encoder`).
    """
    hf_dir = str(hf_dir)
    hf_cfg = read_hf_config(hf_dir)
    family = registry.family_for_hf_config(hf_cfg, os.path.join(hf_dir, "config.json"))
    hf_spec, name = family.hf(), family.name
    config = hf_spec.from_hf_config(hf_cfg, **config_overrides)
    weights = HFWeights(hf_dir)
    part = hf_spec.hf_part(hf_cfg, set(weights.keys()))
    rules = hf_spec.rules(config, part)
    shapes = param_shapes(config, part)
    mapping.check_rules_cover(rules, set(mapping.flatten_paths(shapes)), f"{name} import")
    substitute = _check_keys(hf_dir, name, hf_spec, config, part, weights, rules)
    _check_ties(hf_dir, hf_spec, config, part, weights, substitute)
    _check_constants(hf_dir, hf_spec, config, part, weights)
    params: dict = {}
    first: dict[tuple[str, ...], str] = {}
    from tqdm import tqdm  # noqa: PLC0415

    for rule in tqdm(rules, desc=f"import {name} <- {os.path.basename(hf_dir.rstrip('/'))}",
                     unit="tensor", disable=not progress):
        spec = mapping.get_path(shapes, rule.path)
        tensor = weights[substitute.get(rule.hf_key, rule.hf_key)]
        if rule.path in first:   # a second HF tensor of one param: must be its conversion
            _check_derived(hf_dir, rule, first[rule.path], mapping.get_path(params, rule.path),
                           tensor)
            continue
        first[rule.path] = rule.hf_key
        value = rule.from_hf(tensor, tuple(spec.shape)).astype(spec.dtype, copy=False)
        mapping.set_path(params, rule.path, value)
    log.info("read %d tensors from %s (%s %s)", len(rules), hf_dir, name, hf_spec.classes[part])
    return params, config


def import_checkpoint(hf_dir: str | os.PathLike, output_dir: str | os.PathLike, step: int = 0,
                      **config_overrides):
    """Converts an HF directory into a protlm model directory (orbax checkpoint + config.json).

    Returns:
      The checkpoint directory written by `protlm.checkpoints.save_params`.
    """
    from protlm import checkpoints  # noqa: PLC0415

    params, config = params_from_hf(hf_dir, **config_overrides)
    return checkpoints.save_params(output_dir, params, config, step=step)
