"""The ProtTrans objectives as plain numpy: the twin of `protlm.data.preprocessors`, TF-free.

For feeding the trainer from arrays (GPU benchmarks on machines without TF/seqio, trainer and
Hugging Face tests). `span_denoise_example` and `mlm_example` implement the same rules as the
TensorFlow functions of the same names and draw every random choice from `protlm.data.random_bits`,
so for the same key and tokens both give identical examples (tests/data/test_objective_pair.py).
The batch builders give row `i` the key `random_bits.row_key_np(seed, i)` and do not pack.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from protlm.data import random_bits as rb
from protlm.data import tokens as tok


def num_masks(n: int, density: float, cap: int | None = None) -> int:
    """floor(n * density + 0.5) clipped to [1, n - 1] (0 for n < 2) and to `cap`."""
    k = math.floor(n * density + 0.5)
    k = min(max(k, min(1, n - 1)), max(n - 1, 0))
    return k if cap is None else min(k, cap)


def random_crop(tokens: np.ndarray, max_length: int | None, key: np.ndarray) -> np.ndarray:
    """A uniformly random window of at most `max_length` tokens."""
    if max_length is None:
        return tokens
    max_start = max(len(tokens) - max_length, 0)
    start = int(rb.bits_np(key, rb.CROP, 1)[0] % np.uint32(max_start + 1))
    return tokens[start:start + max_length]


def select_exactly(n: int, k: int, key: np.ndarray) -> np.ndarray:
    """Bool [n] with exactly `k` True positions: the k smallest (bits, position) of the SELECT stream."""
    word = (rb.bits_np(key, rb.SELECT, n) >> np.uint32(1)).astype(np.int64)
    order_key = (word << np.int64(32)) + np.arange(n, dtype=np.int64)
    ranks = np.argsort(np.argsort(order_key))
    return ranks < k


def span_denoise_example(tokens: np.ndarray, key: np.ndarray, crop_length: int | None,
                         noise_density: float = rb.DEFAULT_NOISE_DENSITY) -> dict[str, np.ndarray]:
    """ProtT5 span denoising of one tokenized sequence (see `preprocessors.span_denoise_example`).

    Returns:
      int32 {"inputs": [m + 1], "targets": [m + 1], "source_tokens": [m]}, m = cropped length.
    """
    crop = np.asarray(random_crop(np.asarray(tokens, np.int32), crop_length, key), np.int32)
    n = len(crop)
    mask = select_exactly(n, num_masks(n, noise_density, tok.PROTT5_NUM_SENTINELS), key)
    sentinel = tok.PROTT5_FIRST_SENTINEL_ID + 1 - np.cumsum(mask, dtype=np.int32)
    inputs = np.append(np.where(mask, sentinel, crop), tok.PROTT5_EOS_ID).astype(np.int32)
    return {"inputs": inputs, "targets": np.append(crop, tok.PROTT5_EOS_ID).astype(np.int32),
            "source_tokens": crop}


def mlm_example(tokens: np.ndarray, key: np.ndarray, crop_length: int | None,
                select_fraction: float = rb.DEFAULT_NOISE_DENSITY) -> dict[str, np.ndarray]:
    """BERT masking of one sequence (see `preprocessors.mlm_example`).

    Returns:
      int32 {"inputs", "targets", "loss_weights"} [m + 2] ([CLS] crop [SEP]), "source_tokens" [m].
    """
    crop = np.asarray(random_crop(np.asarray(tokens, np.int32), crop_length, key), np.int32)
    n = len(crop)
    selected = select_exactly(n, num_masks(n, select_fraction), key)
    action = rb.bits_np(key, rb.ACTION, n) >> np.uint32(8)
    to_mask = selected & (action < rb.MLM_MASK_BELOW)
    to_random = selected & (action >= rb.MLM_MASK_BELOW) & (action < rb.MLM_RANDOM_BELOW)
    pool = np.asarray(tok.PROTBERT_STANDARD_RESIDUE_IDS, np.int32)
    random_ids = pool[rb.bits_np(key, rb.RANDOM_RESIDUE, n) % np.uint32(len(pool))]
    masked = np.where(to_mask, tok.PROTBERT_MASK_ID, np.where(to_random, random_ids, crop))
    cls, sep = [tok.PROTBERT_CLS_ID], [tok.PROTBERT_SEP_ID]
    return {"inputs": np.concatenate([cls, masked, sep]).astype(np.int32),
            "targets": np.concatenate([cls, crop, sep]).astype(np.int32),
            "loss_weights": np.concatenate([[0], selected, [0]]).astype(np.int32),
            "source_tokens": crop}


def t5_batch(seqs: Sequence[str], length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """ProtT5 span denoising rows: input with sentinels, target = cropped sequence + `</s>`.

    Rows: residues cropped to `length - 1` plus `</s>`; decoder input = target shifted right.

    Returns:
      int32 arrays [len(seqs), length]: encoder_input_tokens, decoder_input_tokens,
      decoder_target_tokens, decoder_loss_weights.
    """
    n = len(seqs)
    out = {k: np.zeros((n, length), np.int32) for k in (
        "encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
        "decoder_loss_weights")}
    for i, s in enumerate(seqs):
        ex = span_denoise_example(tok.encode_prott5(s), rb.row_key_np(seed, i), length - 1)
        m = len(ex["targets"])
        out["encoder_input_tokens"][i, :m] = ex["inputs"]
        out["decoder_target_tokens"][i, :m] = ex["targets"]
        out["decoder_input_tokens"][i, 1:m] = ex["targets"][:-1]
        out["decoder_loss_weights"][i, :m] = 1
    return out


def bert_batch(seqs: Sequence[str], length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """ProtBert MLM rows: [CLS] seq [SEP], 15 % selected, 80/10/10 [MASK]/random/unchanged.

    Returns:
      int32 arrays [len(seqs), length]: encoder_input_tokens, encoder_target_tokens,
      encoder_loss_weights (1 exactly at the selected positions).
    """
    n = len(seqs)
    out = {k: np.zeros((n, length), np.int32) for k in (
        "encoder_input_tokens", "encoder_target_tokens", "encoder_loss_weights")}
    for i, s in enumerate(seqs):
        ex = mlm_example(tok.encode_protbert(s), rb.row_key_np(seed, i), length - 2)
        m = len(ex["targets"])
        out["encoder_input_tokens"][i, :m] = ex["inputs"]
        out["encoder_target_tokens"][i, :m] = ex["targets"]
        out["encoder_loss_weights"][i, :m] = ex["loss_weights"]
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
