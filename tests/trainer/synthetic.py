"""Small pre-tokenised batches for trainer tests (no TensorFlow): random proteins through each
family's own objective (`Family.array_batch`, i.e. `protlm.data.arrays`)."""
from __future__ import annotations

import numpy as np

from protlm import models
from protlm.data import tokens as tok


def _proteins(seed: int, n: int, length: int) -> list[str]:
    """Random proteins of length//2..length residues with a skewed composition (something to learn)."""
    rng = np.random.default_rng(seed)
    probs = np.linspace(2.0, 0.2, 20)
    probs /= probs.sum()
    letters = rng.choice(np.array(list(tok.STANDARD_AMINO_ACIDS)), size=(n, length), p=probs)
    lengths = rng.integers(length // 2, length + 1, size=n)
    return ["".join(row[:m]) for row, m in zip(letters, lengths)]


def family_arrays(config, n: int = 64, length: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """`n` rows of `config`'s family objective at `length` tokens (specials included)."""
    family = models.get_family(config)
    seqs = _proteins(seed, n, length - family.num_special_tokens())
    return family.array_batch(seqs, family.default_lengths(length), seed)


def t5_arrays(n: int = 64, length: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """ProtT5 batches: 15 % residues -> unique sentinels; decoder target = sequence + EOS."""
    return family_arrays(models.get_config("prot_t5_tiny"), n, length, seed)
