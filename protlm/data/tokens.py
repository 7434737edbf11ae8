"""Token tables of the ProtTrans vocabularies and fast numpy encode/decode.

Pure Python + numpy: this is the only part of the data layer that an embedding or export job on a
machine without TensorFlow imports. The tables are THE one definition of each vocabulary; the seqio
vocabularies (`protlm.data.vocabularies`) and the HF tokenizers are built from them.

ProtT5 (sentencepiece `spiece.model` of Rostlab/prot_t5_xl_uniref50, 128 ids):
  `<pad>`0 `</s>`1 `<unk>`2, residues A L G V S R E D T I P K F Q N Y M H W C X B O U Z at 3..27,
  sentinels `<extra_id_i>` at 127 - i (ids 28..127).
ProtBert (`vocab.txt`, 30 ids):
  `[PAD]`0 `[UNK]`1 `[CLS]`2 `[SEP]`3 `[MASK]`4, residues L A G V E S I K R D T P N Q F Y M H C W X U B Z O.

Residue strings here are plain letters ("MKT..."); the HF tokenizers' space-separated form and the
sentencepiece U+2581 prefix are a concern of `protlm.hf.tokenizers`.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

# ----------------------------------------------------------------------------------------- ProtT5
PROTT5_RESIDUES = "ALGVSREDTIPKFQNYMHWCXBOUZ"  # ids 3..27, spiece order
PROTT5_NUM_SENTINELS = 100
PROTT5_PAD_ID = 0
PROTT5_EOS_ID = 1
PROTT5_UNK_ID = 2
PROTT5_VOCAB_SIZE = 128
PROTT5_TOKENS: list[str] = (
    ["<pad>", "</s>", "<unk>"]
    + list(PROTT5_RESIDUES)
    + [f"<extra_id_{PROTT5_NUM_SENTINELS - 1 - j}>" for j in range(PROTT5_NUM_SENTINELS)]
)
# <extra_id_0> is the last id (T5 convention).
PROTT5_FIRST_SENTINEL_ID = PROTT5_VOCAB_SIZE - 1  # 127 = <extra_id_0>
PROTT5_LAST_SENTINEL_ID = PROTT5_VOCAB_SIZE - PROTT5_NUM_SENTINELS  # 28 = <extra_id_99>


def prott5_sentinel_id(i: int) -> int:
    """Id of `<extra_id_i>` (127 - i)."""
    if not 0 <= i < PROTT5_NUM_SENTINELS:
        raise ValueError(f"sentinel index {i} out of range [0, {PROTT5_NUM_SENTINELS})")
    return PROTT5_FIRST_SENTINEL_ID - i


# --------------------------------------------------------------------------------------- ProtBert
PROTBERT_RESIDUES = "LAGVESIKRDTPNQFYMHCWXUBZO"  # ids 5..29, vocab.txt order
PROTBERT_PAD_ID = 0
PROTBERT_UNK_ID = 1
PROTBERT_CLS_ID = 2
PROTBERT_SEP_ID = 3
PROTBERT_MASK_ID = 4
PROTBERT_VOCAB_SIZE = 30
PROTBERT_TOKENS: list[str] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(PROTBERT_RESIDUES)
# The 20 standard amino acids as ProtBert ids: the pool for MLM's 10 % random replacement.
STANDARD_AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
PROTBERT_STANDARD_RESIDUE_IDS: list[int] = sorted(PROTBERT_TOKENS.index(a) for a in STANDARD_AMINO_ACIDS)

# ----------------------------------------------------------------------------- rare residue policy
# ProtTrans README: `re.sub(r"[UZOB]", "X", seq)` before tokenizing (the ProtT5 embedder maps only U Z O).
RARE_RESIDUE_MAP: dict[str, str] = {"U": "X", "Z": "X", "O": "X", "B": "X"}
NO_RARE_RESIDUE_MAP: dict[str, str] = {}
# Letters a FASTA sequence may contain (both vocabularies have a token for each).
RESIDUE_ALPHABET = frozenset(PROTT5_RESIDUES)

assert len(PROTT5_TOKENS) == PROTT5_VOCAB_SIZE and len(PROTBERT_TOKENS) == PROTBERT_VOCAB_SIZE
assert set(PROTT5_RESIDUES) == set(PROTBERT_RESIDUES)


def byte_lookup_table(
    tokens: Sequence[str], unk_id: int, rare_residue_map: Mapping[str, str] | None = None
) -> np.ndarray:
    """A 256-entry table mapping an ASCII byte of a residue letter to its token id.

    Lower-case letters map like upper case; every other byte maps to `unk_id`. Rare residues
    are redirected through `rare_residue_map` (e.g. U -> X).

    Returns:
      int32 array [256].
    """
    rare = RARE_RESIDUE_MAP if rare_residue_map is None else rare_residue_map
    table = np.full(256, unk_id, dtype=np.int32)
    for letter in PROTT5_RESIDUES:
        target = rare.get(letter, letter)
        if target not in RESIDUE_ALPHABET:
            raise ValueError(f"rare_residue_map sends {letter!r} to {target!r}, which is not a residue")
        tid = tokens.index(target)
        table[ord(letter)] = tid
        table[ord(letter.lower())] = tid
    return table


_T5_TABLE = byte_lookup_table(PROTT5_TOKENS, PROTT5_UNK_ID)
_BERT_TABLE = byte_lookup_table(PROTBERT_TOKENS, PROTBERT_UNK_ID)
_T5_PIECES = np.array(PROTT5_TOKENS, dtype=object)
_BERT_PIECES = np.array(PROTBERT_TOKENS, dtype=object)


def _encode(seq: str | bytes, table: np.ndarray) -> np.ndarray:
    raw = seq.encode("ascii", "replace") if isinstance(seq, str) else seq
    return table[np.frombuffer(raw, dtype=np.uint8)]


def encode_prott5(seq: str | bytes, rare_residue_map: Mapping[str, str] | None = None) -> np.ndarray:
    """Residue letters -> ProtT5 ids (no EOS: the caller appends `PROTT5_EOS_ID`).

    Args:
      seq: residues, e.g. "MKTAYU" (case-insensitive; non-letters become `<unk>`).
      rare_residue_map: policy for U Z O B; default ProtTrans (all -> X); `{}` keeps them.

    Returns:
      int32 array [len(seq)].
    """
    table = _T5_TABLE if rare_residue_map is None else byte_lookup_table(PROTT5_TOKENS, PROTT5_UNK_ID, rare_residue_map)
    return _encode(seq, table)


def encode_protbert(seq: str | bytes, rare_residue_map: Mapping[str, str] | None = None) -> np.ndarray:
    """Residue letters -> ProtBert ids (no [CLS]/[SEP]: the caller adds them).

    Returns:
      int32 array [len(seq)].
    """
    table = (
        _BERT_TABLE if rare_residue_map is None else byte_lookup_table(PROTBERT_TOKENS, PROTBERT_UNK_ID, rare_residue_map)
    )
    return _encode(seq, table)


def _pieces(ids: Iterable[int] | np.ndarray, pieces: np.ndarray) -> list[str]:
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= len(pieces)):
        raise ValueError(f"token id out of range [0, {len(pieces)}): {ids[(ids < 0) | (ids >= len(pieces))][:5]}")
    return list(pieces[ids])


def prott5_id_to_piece(ids: Iterable[int] | np.ndarray) -> list[str]:
    """ProtT5 ids -> token strings, e.g. [19, 127, 1] -> ["M", "<extra_id_0>", "</s>"]."""
    return _pieces(ids, _T5_PIECES)


def protbert_id_to_piece(ids: Iterable[int] | np.ndarray) -> list[str]:
    """ProtBert ids -> token strings, e.g. [2, 21, 4, 3] -> ["[CLS]", "M", "[MASK]", "[SEP]"]."""
    return _pieces(ids, _BERT_PIECES)


def decode_prott5(ids: Iterable[int] | np.ndarray) -> str:
    """ProtT5 ids -> residue string; stops at the first EOS, drops padding, keeps other specials."""
    out = []
    for piece in prott5_id_to_piece(ids):
        if piece == "</s>":
            break
        if piece != "<pad>":
            out.append(piece)
    return "".join(out)


def decode_protbert(ids: Iterable[int] | np.ndarray) -> str:
    """ProtBert ids -> residue string; drops [PAD]/[CLS]/[SEP], keeps [MASK]/[UNK]."""
    return "".join(p for p in protbert_id_to_piece(ids) if p not in ("[PAD]", "[CLS]", "[SEP]"))
