"""ProtBert <-> transformers `BertForMaskedLM` parameter names.

HF layout (PyTorch state dict, torch Linear = `[out, in]`):

    bert.embeddings.{word,position,token_type}_embeddings.weight, bert.embeddings.LayerNorm.{weight,bias}
    bert.encoder.layer.{i}.attention.self.{query,key,value}.{weight,bias}
    bert.encoder.layer.{i}.attention.output.{dense,LayerNorm}.{weight,bias}
    bert.encoder.layer.{i}.intermediate.dense.{weight,bias}
    bert.encoder.layer.{i}.output.{dense,LayerNorm}.{weight,bias}
    cls.predictions.transform.{dense,LayerNorm}.{weight,bias}, cls.predictions.bias

`cls.predictions.decoder.{weight,bias}` are tied copies of the word embeddings and
`cls.predictions.bias`; transformers 5 does not write them, older checkpoints may.
"""
from __future__ import annotations

import os

from collections.abc import Mapping

import numpy as np

from protlm.data import tokens
from protlm.hf import config as hf_config
from protlm.hf import tokenizers
from protlm.hf.mapping import Rule
from protlm.hf.spec import HFSpec, masked_labels
from protlm.models.bert import BertConfig

BERT_ARCH = "BertForMaskedLM"
BERT_VOCAB = "vocab.txt"

# Parts of a BERT checkpoint that BertForMaskedLM (and protlm) has no place for: the position-id
# buffer old transformers versions saved, and the pooler / next-sentence head of
# BertForPreTraining checkpoints. Import drops them with a warning, as transformers does.
DROPPED_KEYS = (
    "bert.embeddings.position_ids",
    "bert.pooler.dense.weight", "bert.pooler.dense.bias",
    "cls.seq_relationship.weight", "cls.seq_relationship.bias",
)


def _linear(hf: str, flax: tuple[str, ...], kernel_layout: str, bias_layout: str = "copy"
            ) -> list[Rule]:
    return [Rule(f"{hf}.weight", flax + ("kernel",), kernel_layout),
            Rule(f"{hf}.bias", flax + ("bias",), bias_layout)]


def _layer_norm(hf: str, flax: tuple[str, ...]) -> list[Rule]:
    return [Rule(f"{hf}.weight", flax + ("scale",)), Rule(f"{hf}.bias", flax + ("bias",))]


# Torch module names of one BERT-style encoder layer, by the protlm module they map to.
BERT_LAYER_NAMES = {"query": "attention.self.query", "key": "attention.self.key",
                    "value": "attention.self.value", "out": "attention.output.dense",
                    "attention_layer_norm": "attention.output.LayerNorm",
                    "wi": "intermediate.dense", "wo": "output.dense",
                    "mlp_layer_norm": "output.LayerNorm"}


def embedding_rules(prefix: str) -> list[Rule]:
    """`{prefix}.embeddings.*`: word / position / token-type tables and their LayerNorm."""
    emb = ("embeddings",)
    out = [Rule(f"{prefix}.embeddings.{name}.weight", emb + (name, "embedding"))
           for name in ("word_embeddings", "position_embeddings", "token_type_embeddings")]
    return out + _layer_norm(f"{prefix}.embeddings.LayerNorm", emb + ("layer_norm",))


def layer_rules(hf: str, fl: tuple[str, ...], names: Mapping[str, str]) -> list[Rule]:
    """One post-LN encoder layer: torch module `{hf}.{names[m]}` <-> flax `fl` + protlm module m
    (`BERT_LAYER_NAMES`'s keys)."""
    out = []
    for name in ("query", "key", "value"):
        out += _linear(f"{hf}.{names[name]}", fl + ("attention", name), "heads_in", "flatten")
    out += _linear(f"{hf}.{names['out']}", fl + ("attention", "out"), "heads_out")
    out += _layer_norm(f"{hf}.{names['attention_layer_norm']}", fl + ("attention_layer_norm",))
    out += _linear(f"{hf}.{names['wi']}", fl + ("mlp", "wi"), "transpose")
    out += _linear(f"{hf}.{names['wo']}", fl + ("mlp", "wo"), "transpose")
    return out + _layer_norm(f"{hf}.{names['mlp_layer_norm']}", fl + ("mlp_layer_norm",))


def mlm_head_rules(transform: str, bias: str) -> list[Rule]:
    """The MLM head: `{transform}.{dense,LayerNorm}` and the output bias `bias` (the decoder
    weight is the tied word embedding)."""
    out = _linear(f"{transform}.dense", ("mlm_head", "transform"), "transpose")
    out += _layer_norm(f"{transform}.LayerNorm", ("mlm_head", "layer_norm"))
    return out + [Rule(bias, ("mlm_head", "bias"))]


def rules(config: BertConfig, part: str = "model") -> list[Rule]:
    """All rules, in the order tensors are written (one part: BertForMaskedLM)."""
    del part
    out = embedding_rules("bert")
    for i in range(config.num_layers):
        out += layer_rules(f"bert.encoder.layer.{i}", ("encoder", f"layers_{i}"), BERT_LAYER_NAMES)
    return out + mlm_head_rules("cls.predictions.transform", "cls.predictions.bias")


def tied_aliases(config: BertConfig, part: str = "model") -> dict[str, str]:
    """`{alias key: canonical key}` for tied copies a checkpoint may also store."""
    del config, part
    return {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
            "cls.predictions.decoder.bias": "cls.predictions.bias"}


# ------------------------------------------------------------------------------------ config.json
def to_hf_config(config: BertConfig, part: str = "model", dtype: str = "float32") -> dict:
    """config.json of `BertForMaskedLM` for `config` (the Rostlab/prot_bert fields and more)."""
    del part
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
        **hf_config.dtype_fields(dtype),
        **hf_config.transformers_version(),
    }


def from_hf_config(d: Mapping, **overrides) -> BertConfig:
    """BertConfig of an HF BERT config.json dict (transformers' defaults for optional fields)."""
    hf_config.require(d, ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
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


# ------------------------------------------------------------------------------------ tokenizer
def write_tokenizer(out_dir: str, config: BertConfig) -> list[str]:
    """Writes `vocab.txt`, `tokenizer_config.json`, `special_tokens_map.json` for `BertTokenizer`.

    `model_max_length` is the config's `max_position_embeddings`.
    """
    model_max_length = config.max_position_embeddings
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, BERT_VOCAB), "w", encoding="utf-8") as f:
        f.write("\n".join(tokens.PROTBERT_TOKENS) + "\n")
    special = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
               "cls_token": "[CLS]", "mask_token": "[MASK]"}
    tokenizers.write_json(os.path.join(out_dir, "special_tokens_map.json"), special)
    tokenizers.write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "tokenizer_class": "BertTokenizer", "do_lower_case": False, "strip_accents": False,
        "tokenize_chinese_chars": False, "model_max_length": model_max_length, **special})
    return [BERT_VOCAB, "special_tokens_map.json", "tokenizer_config.json"]


# ------------------------------------------------------------------------------------ the spec
def torch_inputs(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`BertForMaskedLM` forward kwargs of an MLM batch (same loss)."""
    enc = np.asarray(batch["encoder_input_tokens"]).astype(np.int64)
    return {"input_ids": enc, "attention_mask": (enc != 0).astype(np.int64),
            "labels": masked_labels(batch["encoder_target_tokens"], batch["encoder_loss_weights"])}


SPEC = HFSpec(
    model_types=("bert",), classes={"model": BERT_ARCH}, embed_class="BertModel",
    embed_part="model", rules=rules, to_hf_config=to_hf_config, from_hf_config=from_hf_config,
    write_tokenizer=write_tokenizer, torch_inputs=torch_inputs, tied_aliases=tied_aliases,
    dropped_keys=DROPPED_KEYS)
