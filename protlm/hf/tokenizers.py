"""Tokenizer files for exported models, built from protlm's token tables (no download).

ProtT5: a sentencepiece `spiece.model` (unigram) whose pieces are `<pad> </s> <unk> ▁A ▁L ...` in
ProtT5's id order (ids 0..27); transformers' `T5Tokenizer` appends the 100 `<extra_id_i>` sentinels at
127 - i, exactly as `protlm.data.tokens.PROTT5_TOKENS` has them. ProtBert: the 30-line `vocab.txt`
with `do_lower_case: false`. Both are used the ProtTrans way: residues separated by single spaces,
rare residues (U Z O B) mapped to X first:

    tokenizer(" ".join(re.sub(r"[UZOB]", "X", seq)))
"""
from __future__ import annotations

import json
import os

from protlm.data import tokens

SPIECE_UNDERLINE = "\u2581"
SPIECE_MODEL = "spiece.model"
BERT_VOCAB = "vocab.txt"
# Longest input the tokenizers accept without warning (proteins are long; the models have no limit
# in T5's relative positions, ProtBert's is max_position_embeddings).
T5_MODEL_MAX_LENGTH = 1_000_000_000


def prott5_sentencepiece_model() -> bytes:
    """Serialised sentencepiece ModelProto of the ProtT5 vocabulary (without the sentinels).

    Returns:
      The bytes of a `spiece.model`: 28 pieces, `<pad>`0 `</s>`1 `<unk>`2 and `▁A`3 .. `▁Z`27.
    """
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2  # noqa: PLC0415

    num_base = tokens.PROTT5_VOCAB_SIZE - tokens.PROTT5_NUM_SENTINELS
    base = tokens.PROTT5_TOKENS[:num_base]
    specials = {tokens.PROTT5_PAD_ID: ("<pad>", sp_pb2.ModelProto.SentencePiece.CONTROL),
                tokens.PROTT5_EOS_ID: ("</s>", sp_pb2.ModelProto.SentencePiece.CONTROL),
                tokens.PROTT5_UNK_ID: ("<unk>", sp_pb2.ModelProto.SentencePiece.UNKNOWN)}
    proto = sp_pb2.ModelProto()
    for i, token in enumerate(base):
        piece = proto.pieces.add()
        if i in specials:
            expected, piece.type = specials[i]
            if token != expected:
                raise ValueError(f"ProtT5 token table has {token!r} at id {i}, expected {expected!r}")
            piece.piece, piece.score = token, 0.0
        else:
            if len(token) != 1 or not token.isalpha():
                raise ValueError(f"ProtT5 token {token!r} at id {i} is not a residue letter")
            piece.piece, piece.score = SPIECE_UNDERLINE + token, -float(i)
            piece.type = sp_pb2.ModelProto.SentencePiece.NORMAL
    spec = proto.trainer_spec
    spec.model_type = sp_pb2.TrainerSpec.UNIGRAM
    spec.vocab_size = num_base
    spec.pad_id, spec.eos_id, spec.unk_id, spec.bos_id = (
        tokens.PROTT5_PAD_ID, tokens.PROTT5_EOS_ID, tokens.PROTT5_UNK_ID, -1)
    spec.pad_piece, spec.eos_piece, spec.unk_piece = "<pad>", "</s>", "<unk>"
    spec.byte_fallback = False
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = True
    norm.remove_extra_whitespaces = True
    norm.escape_whitespaces = True
    return proto.SerializeToString()


def _write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def write_prott5_tokenizer(out_dir: str) -> list[str]:
    """Writes `spiece.model`, `tokenizer_config.json`, `special_tokens_map.json` (Rostlab layout).

    Returns:
      The file names written.
    """
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, SPIECE_MODEL), "wb") as f:
        f.write(prott5_sentencepiece_model())
    sentinels = [f"<extra_id_{i}>" for i in range(tokens.PROTT5_NUM_SENTINELS)]
    special = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
               "additional_special_tokens": sentinels}
    _write_json(os.path.join(out_dir, "special_tokens_map.json"), special)
    _write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "tokenizer_class": "T5Tokenizer", "do_lower_case": False,
        "extra_ids": tokens.PROTT5_NUM_SENTINELS, "model_max_length": T5_MODEL_MAX_LENGTH, **special})
    return [SPIECE_MODEL, "special_tokens_map.json", "tokenizer_config.json"]


def write_protbert_tokenizer(out_dir: str, model_max_length: int) -> list[str]:
    """Writes `vocab.txt`, `tokenizer_config.json`, `special_tokens_map.json` for `BertTokenizer`.

    Args:
      out_dir: output directory.
      model_max_length: longest input (the model's max_position_embeddings).
    """
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, BERT_VOCAB), "w", encoding="utf-8") as f:
        f.write("\n".join(tokens.PROTBERT_TOKENS) + "\n")
    special = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
               "cls_token": "[CLS]", "mask_token": "[MASK]"}
    _write_json(os.path.join(out_dir, "special_tokens_map.json"), special)
    _write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "tokenizer_class": "BertTokenizer", "do_lower_case": False, "strip_accents": False,
        "tokenize_chinese_chars": False, "model_max_length": model_max_length, **special})
    return [BERT_VOCAB, "special_tokens_map.json", "tokenizer_config.json"]


def hf_input_text(seq: str) -> str:
    """A residue string the way ProtTrans users feed HF tokenizers: rare residues -> X, spaced."""
    mapped = "".join(tokens.RARE_RESIDUE_MAP.get(c, c) for c in seq.upper())
    return " ".join(mapped)
