"""Token tables of the ProtTrans vocabularies and fast numpy encode/decode.

Pure Python + numpy: this is the only part of the data layer that an embedding or export job on a
machine without TensorFlow imports. The tables are THE one definition of each vocabulary; the seqio
vocabularies (`protlm.data.vocabularies`) and the HF tokenizers are built from them.

ProtT5 (sentencepiece `spiece.model` of Rostlab/prot_t5_xl_uniref50, 128 ids):
  `<pad>`0 `</s>`1 `<unk>`2, residues A L G V S R E D T I P K F Q N Y M H W C X B O U Z at 3..27,
  sentinels `<extra_id_i>` at 127 - i (ids 28..127).
ProtBert (`vocab.txt`, 30 ids):
  `[PAD]`0 `[UNK]`1 `[CLS]`2 `[SEP]`3 `[MASK]`4, residues L A G V E S I K R D T P N Q F Y M H C W X U B Z O.
ProtAlbert (sentencepiece `spiece.model`, 34 ids; the table is marked (verify), see below):
  `<pad>`0 `<unk>`1 `[CLS]`2 `[SEP]`3 `[MASK]`4, residues as ProtBert at 5..29, ids 30..33 reserved.

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


# ---------------------------------------------------------------------------------------- ProtTXL
# (verify) ProtTXL was never released: no vocabulary file exists. Transformer-XL's `Vocab`
# (kimiyoung/transformer-xl `utils/vocabulary.py`) puts its special symbols first (`<eos>`, the
# separator `add_eos` appends to every line) and then the symbols by corpus frequency, with no
# padding symbol (the streams are never padded). protlm adds `<pad>` at 0 (the padding id every
# protlm vocabulary shares, used only when embedding batches of proteins) and `<unk>`, and orders
# the residues by frequency as ProtBert's vocab.txt (the same UniRef/BFD corpora). Rare residues
# follow the ProtTrans README (U Z O B -> X).
PROTTXL_RESIDUES = PROTBERT_RESIDUES  # ids 3..27 (verify)
PROTTXL_PAD_ID = 0
PROTTXL_EOS_ID = 1     # separator after every protein of the stream
PROTTXL_UNK_ID = 2
PROTTXL_TOKENS: list[str] = ["<pad>", "<eos>", "<unk>"] + list(PROTTXL_RESIDUES)
PROTTXL_VOCAB_SIZE = len(PROTTXL_TOKENS)  # 28
_TXL_TABLE = byte_lookup_table(PROTTXL_TOKENS, PROTTXL_UNK_ID)
_TXL_PIECES = np.array(PROTTXL_TOKENS, dtype=object)


def encode_prottxl(seq: str | bytes, rare_residue_map: Mapping[str, str] | None = None) -> np.ndarray:
    """Residue letters -> ProtTXL ids (no separator: the stream appends `PROTTXL_EOS_ID`)."""
    table = (_TXL_TABLE if rare_residue_map is None
             else byte_lookup_table(PROTTXL_TOKENS, PROTTXL_UNK_ID, rare_residue_map))
    return _encode(seq, table)


def prottxl_id_to_piece(ids: Iterable[int] | np.ndarray) -> list[str]:
    """ProtTXL ids -> token strings, e.g. [1, 21, 6] -> ["<eos>", "M", "A"]."""
    return _pieces(ids, _TXL_PIECES)


# -------------------------------------------------------------------------------------- ProtXLNet
# (verify) Rostlab/prot_xlnet's sentencepiece model (`spiece.model`, 238,192 bytes; vocab 37 per
# PROTTRANS_FACTS) was not available here, nor any printed id table. What is known:
#   * zihangdai/xlnet's recipe (`data_utils.special_symbols`; README `spm_train
#     --control_symbols=<cls>,<sep>,<pad>,<mask>,<eod> --user_defined_symbols=<eop>,.,(,),",-,–,£,€`)
#     gives ids 0..16 below: 9 special symbols and 8 user-defined pieces;
#   * the model has exactly 20 pieces that start with "▁" (one per standard residue: a public
#     user of the tokenizer asserts `len([k for k in vocab if k.startswith("▁")]) == 20`), and
#     17 + 20 = 37 = the vocabulary size;
#   * ProtTrans maps U Z O B X to `<unk>` before tokenizing; the tokenizer appends `<sep> <cls>`
#     and pads on the left with `<pad>` (5).
# The residue order (ids 17..36) is the unigram-score (= frequency) order, estimated as ProtBert's.
# Every id is ONE constant here: check against the real file (`[sp.id_to_piece(i) for i in
# range(37)]`) and change only this table.
PROTXLNET_SPECIALS = ["<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>", "<eod>", "<eop>"]
PROTXLNET_USER_SYMBOLS = [".", "(", ")", '"', "-", "\u2013", "\u00a3", "\u20ac"]
PROTXLNET_RESIDUES = "".join(c for c in PROTBERT_RESIDUES if c in STANDARD_AMINO_ACIDS)  # (verify)
PROTXLNET_TOKENS: list[str] = PROTXLNET_SPECIALS + PROTXLNET_USER_SYMBOLS + list(PROTXLNET_RESIDUES)
PROTXLNET_VOCAB_SIZE = len(PROTXLNET_TOKENS)  # 37
PROTXLNET_UNK_ID = 0
PROTXLNET_SEP_ID = 4
PROTXLNET_CLS_ID = 3
PROTXLNET_PAD_ID = 5
PROTXLNET_MASK_ID = 6
PROTXLNET_EOD_ID = 7   # after every protein of the pretraining stream (one protein per document)
# ProtTrans: re.sub(r"[UZOBX]", "<unk>", seq) -- every non-standard residue is <unk>.
PROTXLNET_RARE_RESIDUES = "UZOBX"
assert len(PROTXLNET_TOKENS) == 37 and len(PROTXLNET_RESIDUES) == 20
assert set(PROTXLNET_RESIDUES) == set(STANDARD_AMINO_ACIDS)


def _xlnet_table() -> np.ndarray:
    table = np.full(256, PROTXLNET_UNK_ID, dtype=np.int32)
    for letter in PROTXLNET_RESIDUES:
        tid = PROTXLNET_TOKENS.index(letter)
        table[ord(letter)] = table[ord(letter.lower())] = tid
    return table


_XLNET_TABLE = _xlnet_table()
_XLNET_PIECES = np.array(PROTXLNET_TOKENS, dtype=object)


def encode_protxlnet(seq: str | bytes) -> np.ndarray:
    """Residue letters -> ProtXLNet ids; U Z O B X (and any other byte) -> `<unk>` (no `<sep>
    <cls>`: the caller appends them)."""
    return _encode(seq, _XLNET_TABLE)


def protxlnet_id_to_piece(ids: Iterable[int] | np.ndarray) -> list[str]:
    """ProtXLNet ids -> token strings, e.g. [33, 4, 3] -> ["M", "<sep>", "<cls>"]."""
    return _pieces(ids, _XLNET_PIECES)


# ------------------------------------------------------------------------------------- ProtAlbert
# (verify) Rostlab/prot_albert's sentencepiece model (`spiece.model`, 238 kB, vocab_size 34 in its
# config.json) was not available to the project, nor any printed token table: every id below is ONE
# constant to check against the real file (`[sp.id_to_piece(i) for i in range(34)]`).
#   * 0..4 follow google-research/albert's sentencepiece recipe (README: `--pad_id=0 --unk_id=1
#     --eos_id=-1 --bos_id=-1 --control_symbols=[CLS],[SEP],[MASK]`), which ALBERT's data code pads
#     with (0) and which transformers 5's `AlbertTokenizer` assumes (`<unk>` = 1, `<pad> <unk> [CLS]
#     [SEP] [MASK]` as its default table).
#   * 5..29: sentencepiece orders pieces by corpus frequency; ProtBert's vocab.txt is Rostlab's
#     residue frequency order on the same UniRef100 corpus, so its order is the best estimate.
#     One piece per residue (`▁M`): Rostlab's ProtAlbert notebooks keep exactly one vector per
#     residue after dropping [CLS]/[SEP].
#   * 30..33: four more ids exist (vocab_size 34) whose pieces are unknown; reserved here, never
#     produced by tokenizing residues.
PROTALBERT_RESIDUES = PROTBERT_RESIDUES  # ids 5..29 (verify)
PROTALBERT_PAD_ID = 0
PROTALBERT_UNK_ID = 1
PROTALBERT_CLS_ID = 2
PROTALBERT_SEP_ID = 3
PROTALBERT_MASK_ID = 4
PROTALBERT_NUM_RESERVED = 4
PROTALBERT_VOCAB_SIZE = 34
PROTALBERT_SPECIAL_TOKENS = ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")
PROTALBERT_TOKENS: list[str] = (list(PROTALBERT_SPECIAL_TOKENS) + list(PROTALBERT_RESIDUES)
                                + [f"<reserved_{i}>" for i in range(PROTALBERT_NUM_RESERVED)])
assert len(PROTALBERT_TOKENS) == PROTALBERT_VOCAB_SIZE
assert set(PROTALBERT_RESIDUES) == set(PROTT5_RESIDUES)

# ProtAlbert trains on ProtBert's MLM rule (one implementation, `preprocessors.bert_mlm` /
# `arrays.bert_batch`) with the ids translated, token by token: ProtBert id -> ProtAlbert id and
# back (`[PAD]`/`[UNK]` <-> `<pad>`/`<unk>`; the reserved ids have no ProtBert token -> `[UNK]`).
_BERT_NAMES_IN_ALBERT = {"[PAD]": "<pad>", "[UNK]": "<unk>"}
PROTBERT_TO_PROTALBERT = np.array(
    [PROTALBERT_TOKENS.index(_BERT_NAMES_IN_ALBERT.get(t, t)) for t in PROTBERT_TOKENS], np.int32)
PROTALBERT_TO_PROTBERT = np.full(PROTALBERT_VOCAB_SIZE, PROTBERT_UNK_ID, np.int32)
PROTALBERT_TO_PROTBERT[PROTBERT_TO_PROTALBERT] = np.arange(PROTBERT_VOCAB_SIZE, dtype=np.int32)

_ALBERT_TABLE = byte_lookup_table(PROTALBERT_TOKENS, PROTALBERT_UNK_ID)
_ALBERT_PIECES = np.array(PROTALBERT_TOKENS, dtype=object)


def encode_protalbert(seq: str | bytes, rare_residue_map: Mapping[str, str] | None = None) -> np.ndarray:
    """Residue letters -> ProtAlbert ids (no [CLS]/[SEP]: the caller adds them).

    Returns:
      int32 array [len(seq)].
    """
    table = (_ALBERT_TABLE if rare_residue_map is None
             else byte_lookup_table(PROTALBERT_TOKENS, PROTALBERT_UNK_ID, rare_residue_map))
    return _encode(seq, table)


def protalbert_id_to_piece(ids: Iterable[int] | np.ndarray) -> list[str]:
    """ProtAlbert ids -> token strings, e.g. [2, 21, 4, 3] -> ["[CLS]", "M", "[MASK]", "[SEP]"]."""
    return _pieces(ids, _ALBERT_PIECES)
