"""seqio vocabularies for ProtT5, ProtBert and ProtAlbert, built on the tables in `protlm.data.tokens`.

Encoding takes residue letters ("MKTAYU", or the HF-style "M K T A Y U": whitespace is ignored),
applies the rare-residue policy (default ProtTrans: U Z O B -> X) and never adds EOS / [CLS] / [SEP]
(preprocessors do). Decoding returns the token strings joined without separators, stopping after
the first EOS; sentinels and [MASK] decode to their names (`"MK<extra_id_0>T"`), unlike seqio's
SentencePieceVocabulary which maps extra ids to `<unk>`.

All work in Python (`encode`/`decode`) and in graph mode (`encode_tf`/`decode_tf`: a 256-entry
byte lookup with `tf.gather`, no Python callbacks).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from protlm.data import tokens as tok


class _ResidueVocabulary(seqio.Vocabulary):
    """A character-level residue vocabulary defined by a token table (one piece per id)."""

    _TOKENS: Sequence[str] = ()
    _UNK_ID = 0
    _EOS_ID: int | None = None
    _NUM_EXTRA = 0
    _SILENT = ()  # pieces dropped when decoding to a string

    def __init__(self, rare_residue_map: Mapping[str, str] | None = None):
        """Args:
        rare_residue_map: letters to redirect before lookup; None = ProtTrans default
          (U Z O B -> X); `{}` keeps U Z O B as their own tokens.
        """
        super().__init__(extra_ids=self._NUM_EXTRA)
        self._rare = dict(tok.RARE_RESIDUE_MAP if rare_residue_map is None else rare_residue_map)
        self._byte_table = tok.byte_lookup_table(self._TOKENS, self._UNK_ID, self._rare)
        self._pieces = np.array(self._TOKENS, dtype=object)

    @property
    def tokens(self) -> list[str]:
        """All pieces in id order (length = vocab_size)."""
        return list(self._TOKENS)

    @property
    def rare_residue_map(self) -> dict[str, str]:
        return dict(self._rare)

    @property
    def eos_id(self) -> int | None:
        return self._EOS_ID

    @property
    def unk_id(self) -> int:
        return self._UNK_ID

    @property
    def _base_vocab_size(self) -> int:
        return len(self._TOKENS) - self._NUM_EXTRA

    # ---------------------------------------------------------------- python
    def _encode(self, s: str) -> list[int]:
        raw = "".join(s.split()).encode("ascii", "replace")
        return self._byte_table[np.frombuffer(raw, dtype=np.uint8)].tolist()

    def _decode(self, ids) -> str:
        return "".join(p for p in self.id_to_piece(ids) if p not in self._SILENT)

    def id_to_piece(self, ids) -> list[str]:
        """Token strings of `ids` (every id, including specials and padding)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        ids = np.where((ids >= 0) & (ids < len(self._TOKENS)), ids, self._UNK_ID)
        return list(self._pieces[ids])

    def decode(self, ids) -> str:
        """Ids -> string up to (excluding) the first EOS; sentinels/[MASK] keep their names."""
        if isinstance(ids, tf.Tensor):
            ids = ids.numpy()
        ids = list(np.asarray(ids).reshape(-1))
        if self.eos_id is not None and self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self._decode(ids)

    # -------------------------------------------------------------------- tf
    def _tables(self):
        # Built per call: a cached tensor would belong to the first tf.function graph that made it.
        silent = set(self._SILENT)
        return (
            tf.constant(self._byte_table, dtype=tf.int32),
            tf.constant(["" if p in silent else p for p in self._TOKENS], dtype=tf.string),
        )

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        """Scalar string -> int32 [n] (whitespace ignored)."""
        byte_table, _ = self._tables()
        s = tf.strings.regex_replace(s, r"\s", "")
        raw = tf.io.decode_raw(s, tf.uint8)
        return tf.gather(byte_table, tf.cast(raw, tf.int32))

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        """int [..., n] -> string [...] (padding and anything after EOS dropped)."""
        _, pieces = self._tables()
        ids = tf.clip_by_value(tf.cast(ids, tf.int32), 0, len(self._TOKENS) - 1)
        return tf.strings.reduce_join(tf.gather(pieces, ids), axis=-1)

    def decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        ids = tf.convert_to_tensor(ids)
        if self.eos_id is not None:
            after = tf.cumsum(tf.cast(tf.equal(ids, self.eos_id), tf.int32), exclusive=True, axis=-1)
            ids = tf.where(after > 0, tf.zeros_like(ids), ids)
        return self._decode_tf(ids)

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self._rare == other._rare

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self._rare.items()))))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, rare_residue_map={self._rare})"


class ProtT5Vocabulary(_ResidueVocabulary):
    """ProtT5: `<pad>`0 `</s>`1 `<unk>`2, residues 3..27, `<extra_id_i>` = 127 - i (100 extra ids)."""

    _TOKENS = tok.PROTT5_TOKENS
    _UNK_ID = tok.PROTT5_UNK_ID
    _EOS_ID = tok.PROTT5_EOS_ID
    _NUM_EXTRA = tok.PROTT5_NUM_SENTINELS
    _SILENT = ("<pad>", "</s>")

    def sentinel_id(self, i: int) -> int:
        """Id of `<extra_id_i>`."""
        return tok.prott5_sentinel_id(i)


class ProtBertVocabulary(_ResidueVocabulary):
    """ProtBert: `[PAD] [UNK] [CLS] [SEP] [MASK]` then residues L A G V E S I K R D T P N Q F Y M H C W X U B Z O."""

    _TOKENS = tok.PROTBERT_TOKENS
    _UNK_ID = tok.PROTBERT_UNK_ID
    _EOS_ID = None  # BERT has no EOS; [SEP] closes a sequence
    _NUM_EXTRA = 0
    _SILENT = ("[PAD]", "[CLS]", "[SEP]")

    @property
    def cls_id(self) -> int:
        return tok.PROTBERT_CLS_ID

    @property
    def sep_id(self) -> int:
        return tok.PROTBERT_SEP_ID

    @property
    def mask_id(self) -> int:
        return tok.PROTBERT_MASK_ID


class ProtAlbertVocabulary(_ResidueVocabulary):
    """ProtAlbert: `<pad> <unk> [CLS] [SEP] [MASK]`, residues as ProtBert, 4 reserved ids
    (`protlm.data.tokens`, a table marked verify)."""

    _TOKENS = tok.PROTALBERT_TOKENS
    _UNK_ID = tok.PROTALBERT_UNK_ID
    _EOS_ID = None  # [SEP] closes a sequence
    _NUM_EXTRA = 0
    _SILENT = ("<pad>", "[CLS]", "[SEP]")

    @property
    def mask_id(self) -> int:
        return tok.PROTALBERT_MASK_ID
