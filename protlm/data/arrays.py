"""The pretraining objectives as plain numpy, for feeding the trainer from arrays.

The SeqIO pipeline (`protlm.data.pipeline`) is the production input path; these functions build the
same batch layouts (docs/ARCHITECTURE.md) without TensorFlow, for GPU benchmarks on machines that
have no TF/seqio and for tests. Same objectives: ProtT5 span denoising (span length 1, 15 %, each
masked residue its own sentinel, target = the whole sequence + EOS) and ProtBert MLM (80/10/10).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from protlm.data import tokens as tok


def crop(seq: str, n: int, rng: np.random.Generator) -> str:
    """A random window of at most `n` residues of `seq`."""
    if len(seq) <= n:
        return seq
    start = int(rng.integers(0, len(seq) - n + 1))
    return seq[start:start + n]


def t5_batch(seqs: Sequence[str], length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """ProtT5 span denoising: input with sentinels, target = sequence + `</s>`.

    Rows: residues cropped to `length - 1` plus `</s>`; decoder input = target shifted right.

    Returns:
      int32 arrays [len(seqs), length]: encoder_input_tokens, decoder_input_tokens,
      decoder_target_tokens, decoder_loss_weights.
    """
    rng = np.random.default_rng(seed)
    n = len(seqs)
    out = {k: np.zeros((n, length), np.int32) for k in (
        "encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
        "decoder_loss_weights")}
    for i, s in enumerate(seqs):
        target = np.append(tok.encode_prott5(crop(s, length - 1, rng)), tok.PROTT5_EOS_ID)
        inputs = target.copy()
        masked = np.flatnonzero(rng.random(len(target) - 1) < 0.15)
        inputs[masked] = [tok.prott5_sentinel_id(j % tok.PROTT5_NUM_SENTINELS)
                          for j in range(len(masked))]
        m = len(target)
        out["encoder_input_tokens"][i, :m] = inputs
        out["decoder_target_tokens"][i, :m] = target
        out["decoder_input_tokens"][i, 1:m] = target[:-1]
        out["decoder_loss_weights"][i, :m] = 1
    return out


def bert_batch(seqs: Sequence[str], length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """ProtBert MLM: [CLS] seq [SEP], 15 % selected, 80/10/10 [MASK]/random/unchanged.

    Returns:
      int32 arrays [len(seqs), length]: encoder_input_tokens, encoder_target_tokens,
      encoder_loss_weights (1 exactly at the selected positions).
    """
    rng = np.random.default_rng(seed)
    n = len(seqs)
    out = {k: np.zeros((n, length), np.int32) for k in (
        "encoder_input_tokens", "encoder_target_tokens", "encoder_loss_weights")}
    pool = np.asarray(tok.PROTBERT_STANDARD_RESIDUE_IDS, np.int32)
    for i, s in enumerate(seqs):
        ids = tok.encode_protbert(crop(s, length - 2, rng))
        target = np.concatenate([[tok.PROTBERT_CLS_ID], ids, [tok.PROTBERT_SEP_ID]])
        inputs = target.copy()
        sel = 1 + np.flatnonzero(rng.random(len(ids)) < 0.15)
        r = rng.random(len(sel))
        inputs[sel[r < 0.8]] = tok.PROTBERT_MASK_ID
        rand = sel[(r >= 0.8) & (r < 0.9)]
        inputs[rand] = rng.choice(pool, size=len(rand))
        m = len(target)
        out["encoder_input_tokens"][i, :m] = inputs
        out["encoder_target_tokens"][i, :m] = target
        out["encoder_loss_weights"][i, sel] = 1
    return out


def albert_batch(seqs: Sequence[str], length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """ProtAlbert MLM rows: `bert_batch`'s examples with the ids in ProtAlbert's vocabulary
    (the twin of `preprocessors.protalbert_mlm`; same selection and masks for the same seed).

    Returns:
      int32 arrays [len(seqs), length]: encoder_input_tokens, encoder_target_tokens,
      encoder_loss_weights.
    """
    out = bert_batch(seqs, length, seed)
    for key in ("encoder_input_tokens", "encoder_target_tokens"):
        out[key] = tok.PROTBERT_TO_PROTALBERT[out[key]]
    return out
