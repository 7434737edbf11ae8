"""Small pre-tokenised batches for trainer tests (no TensorFlow): random proteins with the
ProtT5 span-denoising and ProtBert MLM layouts of docs/ARCHITECTURE.md."""
from __future__ import annotations

import numpy as np

from protlm.data import tokens as tok


def _proteins(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Residue letters with a skewed composition (so there is something to learn)."""
    probs = np.linspace(2.0, 0.2, 20)
    probs /= probs.sum()
    letters = rng.choice(np.array(list(tok.STANDARD_AMINO_ACIDS)), size=(n, length), p=probs)
    lengths = rng.integers(length // 2, length + 1, size=n)
    return letters, lengths


def t5_arrays(n: int = 64, length: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """ProtT5 batches: 15 % residues -> unique sentinels; decoder target = sequence + EOS."""
    rng = np.random.default_rng(seed)
    letters, lengths = _proteins(rng, n, length - 1)
    out = {k: np.zeros((n, length), np.int32) for k in (
        "encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
        "decoder_loss_weights")}
    for i in range(n):
        ids = tok.encode_prott5("".join(letters[i, :lengths[i]]))
        target = np.append(ids, tok.PROTT5_EOS_ID)
        inputs = target.copy()
        masked = np.flatnonzero(rng.random(len(ids)) < 0.15)
        inputs[masked] = [tok.prott5_sentinel_id(j % 100) for j in range(len(masked))]
        m = len(target)
        out["encoder_input_tokens"][i, :m] = inputs
        out["decoder_target_tokens"][i, :m] = target
        out["decoder_input_tokens"][i, 1:m] = target[:-1]
        out["decoder_loss_weights"][i, :m] = 1
    return out


def bert_arrays(n: int = 64, length: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """ProtBert batches: [CLS] seq [SEP], 15 % selected, 80/10/10 [MASK]/random/same."""
    rng = np.random.default_rng(seed)
    letters, lengths = _proteins(rng, n, length - 2)
    out = {k: np.zeros((n, length), np.int32) for k in (
        "encoder_input_tokens", "encoder_target_tokens", "encoder_loss_weights")}
    for i in range(n):
        ids = tok.encode_protbert("".join(letters[i, :lengths[i]]))
        target = np.concatenate([[tok.PROTBERT_CLS_ID], ids, [tok.PROTBERT_SEP_ID]])
        inputs = target.copy()
        sel = 1 + np.flatnonzero(rng.random(len(ids)) < 0.15)
        r = rng.random(len(sel))
        inputs[sel[r < 0.8]] = tok.PROTBERT_MASK_ID
        rand = sel[(r >= 0.8) & (r < 0.9)]
        inputs[rand] = rng.integers(5, 25, size=len(rand))
        m = len(target)
        out["encoder_input_tokens"][i, :m] = inputs
        out["encoder_target_tokens"][i, :m] = target
        out["encoder_loss_weights"][i, sel] = 1
    return out
