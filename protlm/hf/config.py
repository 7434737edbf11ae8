"""transformers `config.json` dicts <-> protlm config dataclasses.

The exported dicts carry every field the Rostlab configs carry (ProtT5: the T5Config logged from
Rostlab/prot_t5_xl_uniref50; ProtBert: Rostlab/prot_bert's config.json) plus `model_type`,
`tie_word_embeddings`, `layer_norm_eps` and the dtype, so transformers 4 and 5 rebuild the exact
architecture. Reading accepts any T5 / BERT config.json and applies transformers' defaults for
missing optional fields; the fields that define the architecture are required.
"""
from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping

from protlm.data import tokens
from protlm.models.bert import BertConfig
from protlm.models.t5 import T5Config

# T5's `n_positions` is informational only (relative positions have no limit): ProtT5's value.
T5_N_POSITIONS = 512
T5_ARCH = "T5ForConditionalGeneration"
T5_ENCODER_ARCH = "T5EncoderModel"
BERT_ARCH = "BertForMaskedLM"


def _transformers_version() -> dict[str, str]:
    try:
        return {"transformers_version": importlib.metadata.version("transformers")}
    except importlib.metadata.PackageNotFoundError:
        return {}


def _dtype_fields(dtype: str) -> dict[str, str]:
    # transformers 4 reads `torch_dtype`, transformers 5 `dtype` (and still accepts the former).
    return {"torch_dtype": dtype, "dtype": dtype}


# ------------------------------------------------------------------------------------------ T5
def feed_forward_proj(activations: tuple[str, ...]) -> str:
    """HF `feed_forward_proj` of protlm's `mlp_activations`.

    ("relu",) -> "relu"; ("gelu_new", "linear") -> "gated-gelu" (HF maps it to the tanh GELU);
    (act, "linear") -> "gated-act" for other activations.
    """
    if len(activations) == 1:
        return activations[0]
    if len(activations) == 2 and activations[1] == "linear":
        act = activations[0]
        if act == "gelu_new":
            return "gated-gelu"
        if act == "gelu":
            raise ValueError("mlp_activations ('gelu', 'linear') (exact GELU, gated) has no HF T5 "
                             "feed_forward_proj: HF's 'gated-gelu' is the tanh approximation "
                             "('gelu_new'); train with ('gelu_new', 'linear') to export")
        return f"gated-{act}"
    raise ValueError(f"mlp_activations {activations} has no HF T5 equivalent; HF supports one "
                     "activation or (activation, 'linear') gated")


def mlp_activations(proj: str) -> tuple[str, ...]:
    """protlm `mlp_activations` of an HF `feed_forward_proj`."""
    parts = proj.split("-")
    if len(parts) == 1:
        return (proj,)
    if len(parts) == 2 and parts[0] == "gated":
        return ("gelu_new" if parts[1] == "gelu" else parts[1], "linear")
    raise ValueError(f"feed_forward_proj {proj!r} is not 'act' or 'gated-act'")


def t5_to_hf(config: T5Config, encoder_only: bool = False, dtype: str = "float32") -> dict:
    """config.json of `T5ForConditionalGeneration` (or `T5EncoderModel`) for `config`."""
    proj = feed_forward_proj(config.mlp_activations)
    gated = proj.startswith("gated-")
    dense_act = proj.split("-")[-1]
    return {
        "architectures": [T5_ENCODER_ARCH if encoder_only else T5_ARCH],
        "d_ff": config.mlp_dim,
        "d_kv": config.head_dim,
        "d_model": config.emb_dim,
        "decoder_start_token_id": tokens.PROTT5_PAD_ID,
        "dense_act_fn": "gelu_new" if proj == "gated-gelu" else dense_act,
        "dropout_rate": config.dropout_rate,
        "eos_token_id": tokens.PROTT5_EOS_ID,
        "feed_forward_proj": proj,
        "initializer_factor": 1.0,
        "is_encoder_decoder": True,
        "is_gated_act": gated,
        "layer_norm_epsilon": config.layer_norm_eps,
        "model_type": "t5",
        "n_positions": T5_N_POSITIONS,
        "num_decoder_layers": config.num_decoder_layers,
        "num_heads": config.num_heads,
        "num_layers": config.num_encoder_layers,
        "output_past": True,
        "pad_token_id": tokens.PROTT5_PAD_ID,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "tie_word_embeddings": bool(config.logits_via_embedding),
        "use_cache": True,
        "vocab_size": config.vocab_size,
        **_dtype_fields(dtype),
        **_transformers_version(),
    }


def _require(d: Mapping, keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise ValueError(f"{what}: config.json lacks {missing}, which define the architecture")


def t5_from_hf(d: Mapping, **overrides) -> T5Config:
    """T5Config of an HF T5 config.json dict (transformers' defaults for optional fields).

    Args:
      d: the parsed config.json.
      **overrides: T5Config fields to set on top (e.g. dtype, scan_layers).
    """
    _require(d, ("d_model", "d_kv", "d_ff", "num_heads", "num_layers", "vocab_size"), "T5")
    num_layers = int(d["num_layers"])
    fields = dict(
        vocab_size=int(d["vocab_size"]),
        emb_dim=int(d["d_model"]),
        num_heads=int(d["num_heads"]),
        head_dim=int(d["d_kv"]),
        mlp_dim=int(d["d_ff"]),
        mlp_activations=mlp_activations(d.get("feed_forward_proj", "relu")),
        num_encoder_layers=num_layers,
        num_decoder_layers=int(d.get("num_decoder_layers") or num_layers),
        dropout_rate=float(d.get("dropout_rate", 0.1)),
        relative_attention_num_buckets=int(d.get("relative_attention_num_buckets", 32)),
        relative_attention_max_distance=int(d.get("relative_attention_max_distance", 128)),
        logits_via_embedding=d.get("tie_word_embeddings", True) is not False,
        layer_norm_eps=float(d.get("layer_norm_epsilon", 1e-6)),
    )
    fields.update(overrides)
    return T5Config(**fields)


def is_t5_encoder_only(d: Mapping) -> bool:
    """Whether an HF T5 config.json describes `T5EncoderModel`."""
    return T5_ENCODER_ARCH in (d.get("architectures") or [])


# ---------------------------------------------------------------------------------------- BERT
def bert_to_hf(config: BertConfig, dtype: str = "float32") -> dict:
    """config.json of `BertForMaskedLM` for `config` (the Rostlab/prot_bert fields and more)."""
    return {
        "architectures": [BERT_ARCH],
        "attention_probs_dropout_prob": config.attention_dropout_rate,
        "hidden_act": config.hidden_act,
        "hidden_dropout_prob": config.dropout_rate,
        "hidden_size": config.hidden_size,
        "initializer_range": config.initializer_range,
        "intermediate_size": config.intermediate_size,
        "layer_norm_eps": config.layer_norm_eps,
        "max_position_embeddings": config.max_position_embeddings,
        "model_type": "bert",
        "num_attention_heads": config.num_heads,
        "num_hidden_layers": config.num_layers,
        "pad_token_id": tokens.PROTBERT_PAD_ID,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
        "type_vocab_size": config.type_vocab_size,
        "vocab_size": config.vocab_size,
        **_dtype_fields(dtype),
        **_transformers_version(),
    }


def bert_from_hf(d: Mapping, **overrides) -> BertConfig:
    """BertConfig of an HF BERT config.json dict (transformers' defaults for optional fields)."""
    _require(d, ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "vocab_size"), "BERT")
    if d.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"BERT position_embedding_type {d['position_embedding_type']!r}: protlm "
                         "implements only 'absolute'")
    if d.get("tie_word_embeddings", True) is False:
        raise ValueError("BERT config has tie_word_embeddings false; protlm's MLM decoder is tied "
                         "to the word embeddings")
    fields = dict(
        vocab_size=int(d["vocab_size"]),
        hidden_size=int(d["hidden_size"]),
        num_layers=int(d["num_hidden_layers"]),
        num_heads=int(d["num_attention_heads"]),
        intermediate_size=int(d["intermediate_size"]),
        hidden_act=str(d.get("hidden_act", "gelu")),
        max_position_embeddings=int(d.get("max_position_embeddings", 512)),
        type_vocab_size=int(d.get("type_vocab_size", 2)),
        layer_norm_eps=float(d.get("layer_norm_eps", 1e-12)),
        dropout_rate=float(d.get("hidden_dropout_prob", 0.1)),
        attention_dropout_rate=float(d.get("attention_probs_dropout_prob", 0.1)),
        initializer_range=float(d.get("initializer_range", 0.02)),
    )
    fields.update(overrides)
    return BertConfig(**fields)

