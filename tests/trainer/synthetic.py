"""Small pre-tokenised batches for trainer tests (no TensorFlow): random proteins with the
ProtT5 span-denoising and ProtBert MLM layouts of docs/ARCHITECTURE.md (`protlm.data.arrays`)."""
from __future__ import annotations

import numpy as np

from protlm.data import arrays
from protlm.data import tokens as tok


def _proteins(seed: int, n: int, length: int) -> list[str]:
    """Random proteins of length//2..length residues with a skewed composition (something to learn)."""
    rng = np.random.default_rng(seed)
    probs = np.linspace(2.0, 0.2, 20)
    probs /= probs.sum()
    letters = rng.choice(np.array(list(tok.STANDARD_AMINO_ACIDS)), size=(n, length), p=probs)
    lengths = rng.integers(length // 2, length + 1, size=n)
    return ["".join(row[:m]) for row, m in zip(letters, lengths)]


def t5_arrays(n: int = 64, length: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """ProtT5 batches: 15 % residues -> unique sentinels; decoder target = sequence + EOS."""
    return arrays.t5_batch(_proteins(seed, n, length - 1), length, seed)


def bert_arrays(n: int = 64, length: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """ProtBert batches: [CLS] seq [SEP], 15 % selected, 80/10/10 [MASK]/random/same."""
    return arrays.bert_batch(_proteins(seed, n, length - 2), length, seed)
