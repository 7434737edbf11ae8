"""Shared helpers for model tests: tiny batches."""
import numpy as np
import pytest


def t5_batch(rng: np.random.Generator, b: int = 2, enc_len: int = 10, dec_len: int = 8,
             pad: int = 0) -> dict:
    """Random ProtT5-like batch; the last `pad` positions of each row are padding."""
    enc = rng.integers(3, 128, (b, enc_len)).astype(np.int32)
    tgt = rng.integers(3, 28, (b, dec_len)).astype(np.int32)
    if pad:
        enc[:, -pad:] = 0
        tgt[:, -pad:] = 0
    dec = np.concatenate([np.zeros((b, 1), np.int32), tgt[:, :-1]], axis=1)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
            "decoder_target_tokens": tgt, "decoder_loss_weights": (tgt > 0).astype(np.float32)}


def bert_batch(rng: np.random.Generator, b: int = 2, length: int = 10, pad: int = 0) -> dict:
    tgt = rng.integers(5, 30, (b, length)).astype(np.int32)
    if pad:
        tgt[:, -pad:] = 0
    weights = ((rng.random((b, length)) < 0.4) & (tgt > 0)).astype(np.float32)
    inp = np.where(weights > 0, 4, tgt).astype(np.int32)
    return {"encoder_input_tokens": inp, "encoder_target_tokens": tgt,
            "encoder_loss_weights": weights}


@pytest.fixture
def np_rng():
    return np.random.default_rng(0)
