"""ProtAlbert <-> transformers `AlbertForMaskedLM` parameter names, config.json and tokenizer files.

HF layout (PyTorch state dict, torch Linear = `[out, in]`;
G = `albert_layer_groups.{g}.albert_layers.0`):

    albert.embeddings.{word,position,token_type}_embeddings.weight   [*, embedding_size]
    albert.embeddings.LayerNorm.{weight,bias}
    albert.encoder.embedding_hidden_mapping_in.{weight,bias}         [hidden, embedding_size]
    albert.encoder.G.attention.{query,key,value,dense,LayerNorm}.{weight,bias}
    albert.encoder.G.{ffn,ffn_output,full_layer_layer_norm}.{weight,bias}
    predictions.{dense,LayerNorm}.{weight,bias}, predictions.bias

`predictions.decoder.{weight,bias}` are tied copies of the word embeddings and `predictions.bias`.
Rostlab's `prot_albert` is an `AlbertForPreTraining` file without `model_type` in its config.json:
`recognizes` identifies it by ALBERT's own fields, and its pooler and sentence-order head
(`albert.pooler.*`, `sop_classifier.*`) are dropped on import with a warning (protlm trains MLM
only; `AlbertForMaskedLM` has neither).

Tokenizer: `spiece.model` (unigram, one piece `▁X` per residue) plus the `tokenizer.json` that
transformers 5 loads without converting the sentencepiece file (Rostlab's own spiece.model is not
a unigram model and fails that conversion, transformers #9871), and `tokenizer_config.json` with
`do_lower_case: false` (AlbertTokenizer lower-cases by default, which would turn every residue
into `<unk>`).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping


from protlm.data import tokens
from protlm.hf import bert as hf_bert
from protlm.hf import config as hf_config
from protlm.hf import tokenizers
from protlm.hf.mapping import Rule
from protlm.hf.spec import HFSpec
from protlm.models.albert import AlbertConfig

ALBERT_ARCH = "AlbertForMaskedLM"
TOKENIZER_JSON = "tokenizer.json"

# Keys of ALBERT checkpoints AlbertForMaskedLM (and protlm) has no place for: the position-id
# buffer old transformers versions saved, and the pooler + sentence-order head of
# AlbertForPreTraining (Rostlab's file). Import drops them with a warning, as transformers does.
DROPPED_KEYS = (
    "albert.embeddings.position_ids",
    "albert.pooler.weight", "albert.pooler.bias",
    "sop_classifier.classifier.weight", "sop_classifier.classifier.bias",
)
# Fields only ALBERT configs have (ELECTRA's have embedding_size too): how a config.json without
# `model_type` (Rostlab/prot_albert) is recognised.
ALBERT_ONLY_FIELDS = ("num_hidden_groups", "inner_group_num")


# BERT's per-tensor rule builder (one Linear = weight + bias).
_linear = hf_bert._linear  # pylint: disable=protected-access


# Torch module names of ALBERT's shared layer (`hf_bert.layer_rules`).
ALBERT_LAYER_NAMES = {"query": "attention.query", "key": "attention.key",
                      "value": "attention.value", "out": "attention.dense",
                      "attention_layer_norm": "attention.LayerNorm", "wi": "ffn",
                      "wo": "ffn_output", "mlp_layer_norm": "full_layer_layer_norm"}


def rules(config: AlbertConfig, part: str = "model") -> list[Rule]:
    """All rules, in the order tensors are written (one part: AlbertForMaskedLM)."""
    del part
    out = hf_bert.embedding_rules("albert")
    out += _linear("albert.encoder.embedding_hidden_mapping_in",
                   ("encoder", "embedding_hidden_mapping_in"), "transpose")
    for g in range(config.num_hidden_groups):
        out += hf_bert.layer_rules(f"albert.encoder.albert_layer_groups.{g}.albert_layers.0",
                                   ("encoder", f"layer_groups_{g}"), ALBERT_LAYER_NAMES)
    return out + hf_bert.mlm_head_rules("predictions", "predictions.bias")


def tied_aliases(config: AlbertConfig, part: str = "model") -> dict[str, str]:
    """`{alias key: canonical key}` for tied copies a checkpoint may also store."""
    del config, part
    return {"predictions.decoder.weight": "albert.embeddings.word_embeddings.weight",
            "predictions.decoder.bias": "predictions.bias"}


# ------------------------------------------------------------------------------------ config.json
def to_hf_config(config: AlbertConfig, part: str = "model", dtype: str = "float32") -> dict:
    """config.json of `AlbertForMaskedLM`: BERT's fields (`protlm.hf.bert.to_hf_config`, every one
    of them an `AlbertConfig` field too) plus ALBERT's; every Rostlab/prot_albert field, and
    `model_type`, `architectures`, the layer-norm epsilon, the special ids and the dtype."""
    d = hf_bert.to_hf_config(config, part, dtype)
    d.update(architectures=[ALBERT_ARCH], model_type="albert",
             embedding_size=config.embedding_size, num_hidden_groups=config.num_hidden_groups,
             inner_group_num=1, pad_token_id=tokens.PROTALBERT_PAD_ID,
             bos_token_id=tokens.PROTALBERT_CLS_ID, eos_token_id=tokens.PROTALBERT_SEP_ID)
    return dict(sorted(d.items()))


def from_hf_config(d: Mapping, **overrides) -> AlbertConfig:
    """AlbertConfig of an HF ALBERT config.json dict (Rostlab's, without `model_type`, included):
    BERT's reading with transformers' `AlbertConfig` defaults, plus ALBERT's fields."""
    hf_config.require(d, ("embedding_size", "hidden_size", "num_hidden_layers",
                          "num_attention_heads", "intermediate_size", "vocab_size"), "ALBERT")
    if int(d.get("inner_group_num", 1)) != 1:
        raise ValueError(f"ALBERT inner_group_num {d['inner_group_num']}: protlm implements 1 "
                         "(one layer per group, as every released ALBERT and ProtAlbert)")
    albert_defaults = {"hidden_act": "gelu_new", "hidden_dropout_prob": 0.0,
                       "attention_probs_dropout_prob": 0.0}
    fields = dataclasses.asdict(hf_bert.from_hf_config({**albert_defaults, **d}))
    fields.update(embedding_size=int(d["embedding_size"]),
                  num_hidden_groups=int(d.get("num_hidden_groups", 1)), **overrides)
    return AlbertConfig(**fields)


def recognizes(d: Mapping) -> bool:
    """A config.json without `model_type` is ALBERT's when it has ALBERT's layer-sharing fields."""
    return all(k in d for k in ALBERT_ONLY_FIELDS)


# ------------------------------------------------------------------------------------ tokenizer
def _is_control(token: str) -> bool:
    """Special and reserved pieces (stored as they are; residues are stored as `▁X`)."""
    return token in tokens.PROTALBERT_SPECIAL_TOKENS or token.startswith("<reserved_")


def protalbert_sentencepiece_model() -> bytes:
    """`spiece.model` of `protlm.data.tokens.PROTALBERT_TOKENS` (34 pieces, same ids)."""
    specials = {i: t for i, t in enumerate(tokens.PROTALBERT_TOKENS) if _is_control(t)}
    return tokenizers.unigram_sentencepiece_model(
        tokens.PROTALBERT_TOKENS, specials, unk_id=tokens.PROTALBERT_UNK_ID,
        pad_id=tokens.PROTALBERT_PAD_ID)


def protalbert_tokenizer_json() -> str:
    """`tokenizer.json` (HF `tokenizers`) equal to what transformers 5 builds from the spiece.model:
    unigram over the same pieces and ids, whitespace split + `▁` prefix, `[CLS] $A [SEP]`."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors  # noqa: PLC0415
    from tokenizers.models import Unigram  # noqa: PLC0415

    vocab = [(t, 0.0) if _is_control(t) else (tokenizers.SPIECE_UNDERLINE + t, -float(i))
             for i, t in enumerate(tokens.PROTALBERT_TOKENS)]
    tok = Tokenizer(Unigram(vocab, unk_id=tokens.PROTALBERT_UNK_ID, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement=tokenizers.SPIECE_UNDERLINE, prepend_scheme="always")])
    tok.decoder = decoders.Metaspace(replacement=tokenizers.SPIECE_UNDERLINE,
                                     prepend_scheme="always")
    cls, sep = tokens.PROTALBERT_CLS_ID, tokens.PROTALBERT_SEP_ID
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.add_special_tokens(list(tokens.PROTALBERT_SPECIAL_TOKENS))
    return tok.to_str(pretty=True)


def write_tokenizer(out_dir: str, config: AlbertConfig) -> list[str]:
    """Writes `spiece.model`, `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`
    for `AlbertTokenizer` / `AutoTokenizer` (transformers 5). `model_max_length` is the config's
    `max_position_embeddings`."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, tokenizers.SPIECE_MODEL), "wb") as f:
        f.write(protalbert_sentencepiece_model())
    with open(os.path.join(out_dir, TOKENIZER_JSON), "w", encoding="utf-8") as f:
        f.write(protalbert_tokenizer_json())
    special = {"bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "<unk>",
               "sep_token": "[SEP]", "pad_token": "<pad>", "cls_token": "[CLS]",
               "mask_token": "[MASK]"}
    tokenizers.write_json(os.path.join(out_dir, "special_tokens_map.json"), special)
    tokenizers.write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "tokenizer_class": "AlbertTokenizer", "do_lower_case": False, "keep_accents": True,
        "remove_space": True, "model_max_length": config.max_position_embeddings, **special})
    return [tokenizers.SPIECE_MODEL, TOKENIZER_JSON, "special_tokens_map.json",
            "tokenizer_config.json"]


# ------------------------------------------------------------------------------------ the spec
SPEC = HFSpec(
    model_types=("albert",), classes={"model": ALBERT_ARCH}, embed_class="AlbertModel",
    embed_part="model", rules=rules, to_hf_config=to_hf_config, from_hf_config=from_hf_config,
    write_tokenizer=write_tokenizer, torch_inputs=hf_bert.torch_inputs, tied_aliases=tied_aliases,
    dropped_keys=DROPPED_KEYS, recognizes=recognizes)
