"""ProtXLNet <-> transformers `XLNetLMHeadModel` (Rostlab/prot_xlnet's class; still in transformers 5).

Parameter layout: `protlm.hf.xl_layout` (shared with ProtTXL). `lm_loss.weight` is tied to the
word embedding (transformers 5 does not write it; Rostlab's `pytorch_model.bin` stores it, checked
equal on import). Tokenizer: a sentencepiece `spiece.model` of `protlm.data.tokens.PROTXLNET_TOKENS`
for `XLNetTokenizer` (appends `<sep> <cls>`, pads on the left with `<pad>` = 5); inputs the
ProtTrans way, `re.sub(r"[UZOBX]", "<unk>", " ".join(seq))` (`hf_input_text` here).
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping

import numpy as np

from protlm.data import tokens
from protlm.hf import tokenizers, xl_layout
from protlm.hf.spec import HFSpec, masked_labels
from protlm.models.xlnet import XLNetConfig, permutation_masks


def rules(config: XLNetConfig, part: str = "model"):
    del part
    return xl_layout.xl_rules(config)


def tied_aliases(config: XLNetConfig, part: str = "model") -> dict[str, str]:
    del config, part
    return {"lm_loss.weight": "transformer.word_embedding.weight"}


def to_hf_config(config: XLNetConfig, part: str = "model", dtype: str = "float32") -> dict:
    del part
    return xl_layout.hf_config(config, dtype, attn_type="bi", tie_word_embeddings=True,
                               pad_token_id=tokens.PROTXLNET_PAD_ID, bos_token_id=1,
                               eos_token_id=2)


def from_hf_config(d: Mapping, **overrides) -> XLNetConfig:
    """XLNetConfig of an XLNet config.json (`attn_type` "bi"; transformers' defaults)."""
    if d.get("attn_type", "bi") != "bi":
        raise ValueError(f"XLNet attn_type {d['attn_type']!r}: ProtXLNet is bidirectional ('bi'); "
                         "a 'uni' config is a Transformer-XL (protlm family 'txl')")
    if d.get("tie_word_embeddings", True) is False:
        raise ValueError("XLNet config has tie_word_embeddings false; ProtXLNet ties lm_loss to "
                         "the word embedding")
    fields = xl_layout.config_fields(d)
    fields["reuse_len"] = int(d.get("reuse_len") or 0)
    fields.update(overrides)
    return XLNetConfig(**fields)


XLNET_FIELDS = ("d_model", "n_layer", "n_head", "d_inner")


def recognizes(d: Mapping) -> bool:
    """An XLNet config.json (its own field names) with bidirectional attention (TXL exports the
    same class with `attn_type="uni"`)."""
    return all(k in d for k in XLNET_FIELDS) and d.get("attn_type", "bi") == "bi"


# ------------------------------------------------------------------------------------ tokenizer
def sentencepiece_model() -> bytes:
    """`spiece.model` with ProtXLNet's 37 pieces in `PROTXLNET_TOKENS` order (residues `▁X`)."""
    specials = {i: t for i, t in enumerate(tokens.PROTXLNET_TOKENS)
                if t not in tokens.PROTXLNET_RESIDUES}
    return tokenizers.unigram_sentencepiece_model(
        tokens.PROTXLNET_TOKENS, specials, unk_id=tokens.PROTXLNET_UNK_ID,
        pad_id=tokens.PROTXLNET_PAD_ID, eos_id=2, bos_id=1)


def write_tokenizer(out_dir: str, config: XLNetConfig | None = None) -> list[str]:
    """Writes `spiece.model`, `tokenizer_config.json`, `special_tokens_map.json` (Rostlab layout)."""
    del config
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, tokenizers.SPIECE_MODEL), "wb") as f:
        f.write(sentencepiece_model())
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "<sep>",
               "pad_token": "<pad>", "cls_token": "<cls>", "mask_token": "<mask>",
               "additional_special_tokens": ["<eop>", "<eod>"]}
    tokenizers.write_json(os.path.join(out_dir, "special_tokens_map.json"), special)
    tokenizers.write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "tokenizer_class": "XLNetTokenizer", "do_lower_case": False, "remove_space": True,
        "keep_accents": False, "padding_side": "left", "model_max_length": 1_000_000_000,
        **special})
    return [tokenizers.SPIECE_MODEL, "special_tokens_map.json", "tokenizer_config.json"]


def hf_input_text(seq: str) -> str:
    """ProtTrans' ProtXLNet input: residues spaced, `[UZOBX]` -> `<unk>`."""
    return re.sub(r"[UZOBX]", "<unk>", " ".join(seq.upper()))


# ------------------------------------------------------------------------------------ the spec
def torch_inputs(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`XLNetLMHeadModel` forward kwargs of a permutation-LM batch (same loss; `reverse` rows
    need a model built with `bi_data=True` and the backward rows in the second half)."""
    ids = np.asarray(batch["input_tokens"])
    valid = np.ones(ids.shape, bool)
    _, see = permutation_masks(ids, np.asarray(batch["perm_index"]),
                               np.asarray(batch["perm_part"]), valid, 0)
    weights = np.asarray(batch["target_weights"])
    mapping = np.eye(ids.shape[1], dtype=np.float32)[np.asarray(batch["target_positions"])]
    return {"input_ids": ids.astype(np.int64), "token_type_ids": np.asarray(batch["seg_ids"]).astype(np.int64),
            "perm_mask": 1.0 - np.asarray(see[:, 0], np.float32),
            "target_mapping": mapping * weights[..., None].astype(np.float32),
            "labels": masked_labels(batch["target_tokens"], weights)}


SPEC = HFSpec(
    model_types=("xlnet",), classes={"model": xl_layout.ARCH}, embed_class="XLNetModel",
    embed_part="model", rules=rules, to_hf_config=to_hf_config, from_hf_config=from_hf_config,
    write_tokenizer=write_tokenizer, torch_inputs=torch_inputs, tied_aliases=tied_aliases,
    recognizes=recognizes)
