"""Shared pieces of the tokenizer files exported models carry (built from protlm's token tables,
no download): a unigram sentencepiece model from a token table, JSON writers, and the input text
the ProtTrans way. Each family writes its own files (`write_tokenizer` in `protlm/hf/<family>.py`).
Inputs: residues separated by single spaces, rare residues (U Z O B) mapped to X first:

    tokenizer(" ".join(re.sub(r"[UZOB]", "X", seq)))
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from protlm.data import tokens

SPIECE_UNDERLINE = "\u2581"
SPIECE_MODEL = "spiece.model"


def unigram_sentencepiece_model(pieces: Sequence[str], specials: Mapping[int, str], *,
                                 unk_id: int, pad_id: int = -1, eos_id: int = -1,
                                 bos_id: int = -1) -> bytes:
    """Serialised sentencepiece ModelProto (unigram) whose piece `i` is `pieces[i]`.

    Args:
      pieces: the vocabulary in id order; ids in `specials` are control/unknown tokens, every
        other entry a residue letter, stored as `▁X` (how `"M K T"` tokenises, one piece per
        residue).
      specials: `{id: token}` of the control tokens and the unknown token.
      unk_id, pad_id, eos_id, bos_id: the special ids sentencepiece knows (-1 = none).

    Returns:
      The bytes of a `spiece.model`.
    """
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2  # noqa: PLC0415

    proto = sp_pb2.ModelProto()
    for i, token in enumerate(pieces):
        piece = proto.pieces.add()
        if i in specials:
            if token != specials[i]:
                raise ValueError(f"token table has {token!r} at id {i}, expected {specials[i]!r}")
            piece.piece, piece.score = token, 0.0
            piece.type = (sp_pb2.ModelProto.SentencePiece.UNKNOWN if i == unk_id
                          else sp_pb2.ModelProto.SentencePiece.CONTROL)
        else:
            if len(token) != 1 or not token.isalpha():
                raise ValueError(f"token {token!r} at id {i} is not a residue letter")
            piece.piece, piece.score = SPIECE_UNDERLINE + token, -float(i)
            piece.type = sp_pb2.ModelProto.SentencePiece.NORMAL
    spec = proto.trainer_spec
    spec.model_type = sp_pb2.TrainerSpec.UNIGRAM
    spec.vocab_size = len(pieces)
    spec.pad_id, spec.eos_id, spec.unk_id, spec.bos_id = pad_id, eos_id, unk_id, bos_id
    for name, idx in (("pad_piece", pad_id), ("eos_piece", eos_id), ("unk_piece", unk_id),
                      ("bos_piece", bos_id)):
        if idx >= 0:
            setattr(spec, name, pieces[idx])
    spec.byte_fallback = False
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = True
    norm.remove_extra_whitespaces = True
    norm.escape_whitespaces = True
    return proto.SerializeToString()


def write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def hf_input_text(seq: str) -> str:
    """A residue string the way ProtTrans users feed HF tokenizers: rare residues -> X, spaced."""
    mapped = "".join(tokens.RARE_RESIDUE_MAP.get(c, c) for c in seq.upper())
    return " ".join(mapped)
