"""What export and import need per model family, in one table (ProtT5, ProtBert)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

from protlm.hf import bert as hf_bert
from protlm.hf import config as hf_config
from protlm.hf import t5 as hf_t5
from protlm.hf import tokenizers
from protlm.hf.mapping import Rule
from protlm.models.bert import BertConfig
from protlm.models.t5 import T5Config


@dataclasses.dataclass(frozen=True)
class Family:
    """Per-family conversion pieces.

    Attributes:
      name: "t5" or "bert" (as in protlm's config.json).
      config_cls: the protlm config dataclass.
      rules: `(config, encoder_only) -> [Rule]`.
      tied_aliases: `(config, encoder_only) -> {alias key: canonical key}`.
      dropped_keys: HF keys with no protlm counterpart, dropped on import with a warning.
      to_hf_config: `(config, encoder_only, dtype) -> config.json dict`.
      from_hf_config: `(config.json dict) -> config`.
      write_tokenizer: `(out_dir, config) -> [file names]`.
    """

    name: str
    config_cls: type
    rules: Callable[..., list[Rule]]
    tied_aliases: Callable[..., dict[str, str]]
    dropped_keys: tuple[str, ...]
    to_hf_config: Callable[..., dict]
    from_hf_config: Callable[..., object]
    write_tokenizer: Callable[[str, object], list[str]]


FAMILIES: dict[str, Family] = {
    "t5": Family(
        name="t5", config_cls=T5Config, rules=hf_t5.rules, tied_aliases=hf_t5.tied_aliases,
        dropped_keys=hf_t5.DROPPED_KEYS,
        to_hf_config=lambda c, encoder_only, dtype: hf_config.t5_to_hf(c, encoder_only, dtype),
        from_hf_config=hf_config.t5_from_hf,
        write_tokenizer=lambda out_dir, c: tokenizers.write_prott5_tokenizer(out_dir)),
    "bert": Family(
        name="bert", config_cls=BertConfig, rules=hf_bert.rules,
        tied_aliases=hf_bert.tied_aliases, dropped_keys=hf_bert.DROPPED_KEYS,
        to_hf_config=lambda c, encoder_only, dtype: hf_config.bert_to_hf(c, dtype),
        from_hf_config=hf_config.bert_from_hf,
        write_tokenizer=lambda out_dir, c: tokenizers.write_protbert_tokenizer(
            out_dir, c.max_position_embeddings)),
}


def family_of_config(config) -> Family:
    """The family of a protlm config dataclass."""
    for family in FAMILIES.values():
        if isinstance(config, family.config_cls):
            return family
    raise TypeError(f"no Hugging Face conversion for config type {type(config).__name__}; "
                    f"supported: {[f.config_cls.__name__ for f in FAMILIES.values()]}")


def family_of_hf_config(d: Mapping, where: str = "config.json") -> Family:
    """The family of an HF config.json dict (by `model_type`)."""
    model_type = d.get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(f"{where}: model_type {model_type!r} is not supported; protlm imports "
                         f"{sorted(FAMILIES)} (ProtT5 and ProtBert checkpoints)")
    return FAMILIES[model_type]


def param_shapes(config, encoder_only: bool = False) -> dict:
    """Unscanned param tree of `jax.ShapeDtypeStruct` for `config` (nothing allocated)."""
    import flax.linen as nn  # noqa: PLC0415
    import jax  # noqa: PLC0415

    from protlm import models  # noqa: PLC0415

    if getattr(config, "scan_layers", False):
        config = dataclasses.replace(config, scan_layers=False)
    model = models.get_model(config)
    batch = {k: jax.ShapeDtypeStruct((1, 8), np.int32)
             for k in ("encoder_input_tokens", "decoder_input_tokens")}
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch))
    shapes = nn.unbox(variables["params"])
    if encoder_only:
        shapes = {k: v for k, v in shapes.items() if k != "decoder"}
    return shapes
