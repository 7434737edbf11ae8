"""Residue encodings used as baselines: one-hot and BLOSUM62.

Both map a residue string to a per-residue feature matrix [L, d]; the per-protein feature is the mean
over residues (for one-hot that is the amino-acid composition), exactly as for language-model
embeddings, so every baseline goes through the identical probe.
"""
from __future__ import annotations

import numpy as np

STANDARD = "ACDEFGHIKLMNPQRSTVWY"

# NCBI BLOSUM62 (half-bit units), rows/columns in this order.
BLOSUM62_ORDER = "ARNDCQEGHILKMFPSTWYVBZX*"
_BLOSUM62_ROWS = """
 4 -1 -2 -2  0 -1 -1  0 -2 -1 -1 -1 -1 -2 -1  1  0 -3 -2  0 -2 -1  0 -4
-1  5  0 -2 -3  1  0 -2  0 -3 -2  2 -1 -3 -2 -1 -1 -3 -2 -3 -1  0 -1 -4
-2  0  6  1 -3  0  0  0  1 -3 -3  0 -2 -3 -2  1  0 -4 -2 -3  3  0 -1 -4
-2 -2  1  6 -3  0  2 -1 -1 -3 -4 -1 -3 -3 -1  0 -1 -4 -3 -3  4  1 -1 -4
 0 -3 -3 -3  9 -3 -4 -3 -3 -1 -1 -3 -1 -2 -3 -1 -1 -2 -2 -1 -3 -3 -2 -4
-1  1  0  0 -3  5  2 -2  0 -3 -2  1  0 -3 -1  0 -1 -2 -1 -2  0  3 -1 -4
-1  0  0  2 -4  2  5 -2  0 -3 -3  1 -2 -3 -1  0 -1 -3 -2 -2  1  4 -1 -4
 0 -2  0 -1 -3 -2 -2  6 -2 -4 -4 -2 -3 -3 -2  0 -2 -2 -3 -3 -1 -2 -1 -4
-2  0  1 -1 -3  0  0 -2  8 -3 -3 -1 -2 -1 -2 -1 -2 -2  2 -3  0  0 -1 -4
-1 -3 -3 -3 -1 -3 -3 -4 -3  4  2 -3  1  0 -3 -2 -1 -3 -1  3 -3 -3 -1 -4
-1 -2 -3 -4 -1 -2 -3 -4 -3  2  4 -2  2  0 -3 -2 -1 -2 -1  1 -4 -3 -1 -4
-1  2  0 -1 -3  1  1 -2 -1 -3 -2  5 -1 -3 -1  0 -1 -3 -2 -2  0  1 -1 -4
-1 -1 -2 -3 -1  0 -2 -3 -2  1  2 -1  5  0 -2 -1 -1 -1 -1  1 -3 -1 -1 -4
-2 -3 -3 -3 -2 -3 -3 -3 -1  0  0 -3  0  6 -4 -2 -2  1  3 -1 -3 -3 -1 -4
-1 -2 -2 -1 -3 -1 -1 -2 -2 -3 -3 -1 -2 -4  7 -1 -1 -4 -3 -2 -2 -1 -2 -4
 1 -1  1  0 -1  0  0  0 -1 -2 -2  0 -1 -2 -1  4  1 -3 -2 -2  0  0  0 -4
 0 -1  0 -1 -1 -1 -1 -2 -2 -1 -1 -1 -1 -2 -1  1  5 -2 -2  0 -1 -1  0 -4
-3 -3 -4 -4 -2 -2 -3 -2 -2 -3 -2 -3 -1  1 -4 -3 -2 11  2 -3 -4 -3 -2 -4
-2 -2 -2 -3 -2 -1 -2 -3  2 -1 -1 -2 -1  3 -3 -2 -2  2  7 -1 -3 -2 -1 -4
 0 -3 -3 -3 -1 -2 -2 -3 -3  3  1 -2  1 -1 -2 -2  0 -3 -1  4 -3 -2 -1 -4
-2 -1  3  4 -3  0  1 -1  0 -3 -4  0 -3 -3 -2  0 -1 -4 -3 -3  4  1 -1 -4
-1  0  0  1 -3  3  4 -2  0 -3 -3  1 -1 -3 -1  0 -1 -3 -2 -2  1  4 -1 -4
 0 -1 -1 -1 -2 -1 -1 -1 -1 -1 -1 -1 -1 -1 -2  0  0 -2 -1 -1 -1 -1 -1 -4
-4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4 -4  1
"""
BLOSUM62 = np.array([[int(v) for v in row.split()] for row in _BLOSUM62_ROWS.strip().splitlines()], dtype=np.int8)
assert BLOSUM62.shape == (24, 24) and (BLOSUM62 == BLOSUM62.T).all()

# BLOSUM62 features: the 24-entry row of the residue, divided by this so values lie in about [-1, 3].
BLOSUM62_SCALE = 4.0
# Letters without a row of their own (selenocysteine, pyrrolysine) use the row of X.
_BLOSUM_ALIASES = {"U": "X", "O": "X", "J": "X"}

ENCODINGS = ("onehot", "blosum62")


def _index_table(letters: str, default: int, aliases: dict[str, str] | None = None) -> np.ndarray:
    """256-entry byte -> row index table (case-insensitive); unknown bytes -> `default`."""
    table = np.full(256, default, dtype=np.int32)
    for i, c in enumerate(letters):
        table[ord(c)] = table[ord(c.lower())] = i
    for c, target in (aliases or {}).items():
        table[ord(c)] = table[ord(c.lower())] = letters.index(target)
    return table


# One-hot: 20 standard amino acids + one column for everything else (X, B, Z, U, O, ...).
_ONEHOT_TABLE = _index_table(STANDARD, default=len(STANDARD))
_ONEHOT = np.eye(len(STANDARD) + 1, dtype=np.float32)
_BLOSUM_TABLE = _index_table(BLOSUM62_ORDER, default=BLOSUM62_ORDER.index("X"), aliases=_BLOSUM_ALIASES)
_BLOSUM = BLOSUM62.astype(np.float32) / BLOSUM62_SCALE


def _bytes(seq: str) -> np.ndarray:
    return np.frombuffer(seq.encode("ascii", "replace"), dtype=np.uint8)


def onehot(seq: str) -> np.ndarray:
    """One-hot over the 20 standard residues plus an 'other' column.

    Returns:
      float32 [L, 21].
    """
    return _ONEHOT[_ONEHOT_TABLE[_bytes(seq)]]


def blosum62(seq: str) -> np.ndarray:
    """Each residue's BLOSUM62 row (24 columns, order `BLOSUM62_ORDER`), scaled by 1/4.

    Returns:
      float32 [L, 24].
    """
    return _BLOSUM[_BLOSUM_TABLE[_bytes(seq)]]


def encode(name: str, seq: str) -> np.ndarray:
    """Dispatches to `onehot` or `blosum62`; returns float32 [L, d]."""
    if name == "onehot":
        return onehot(seq)
    if name == "blosum62":
        return blosum62(seq)
    raise ValueError(f"unknown encoding {name!r}; expected one of {ENCODINGS}")
