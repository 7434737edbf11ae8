"""ProtTXL's objective as numpy: next-token prediction over parallel protein streams.

Step `t` of row `r` reads stream positions `[t * L, (t + 1) * L]` (`L` = `tgt_len`, the task
feature length "inputs"): `decoder_input_tokens = stream[tL : tL + L]`, `decoder_target_tokens =
stream[tL + 1 : tL + L + 1]` (Transformer-XL's `LMOrderedIterator.get_batch`, `ext_len` 0), every
target weighs 1 (streams have no padding; separators are predicted too, as `<eos>` in the
original).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from protlm.data import tokens as tok
from protlm.data.streams import ProteinStreams

KEYS = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights")


def stream_batch(streams: ProteinStreams, step: int, length: int) -> dict[str, np.ndarray]:
    """Batch `step` of every row (`[rows, length]` int32); releases what no later step needs."""
    out = {k: np.zeros((streams.rows, length), np.int32) for k in KEYS}
    for r in range(streams.rows):
        window, _ = streams.window(r, step * length, length + 1)
        out["decoder_input_tokens"][r] = window[:-1]
        out["decoder_target_tokens"][r] = window[1:]
        streams.release(r, (step + 1) * length)
    out["decoder_loss_weights"][:] = 1
    return out


def advance(streams: ProteinStreams, step: int, length: int) -> None:
    """The record requests of `stream_batch(streams, step, length)` without building it."""
    for r in range(streams.rows):
        streams.window(r, step * length, length + 1)
        streams.release(r, (step + 1) * length)


def single_protein_rows(sequences: Sequence[str], length: int, seed: int = 0
                        ) -> dict[str, np.ndarray]:
    """One row per sequence: the stream `<eos> seq_i <eos> seq_i+1 ...` (wrapping around the
    list) from the separator before sequence `i`, `length` inputs and their successors.

    For array-fed runs, tests and benchmarks (`Family.array_batch`); `seed` is unused (the
    objective has no randomness).
    """
    del seed
    ids = [np.append(tok.encode_prottxl(s), tok.PROTTXL_EOS_ID).astype(np.int32)
           for s in sequences]
    if not ids:
        raise ValueError("single_protein_rows needs at least one sequence")
    out = {k: np.zeros((len(ids), length), np.int32) for k in KEYS}
    for i in range(len(ids)):
        row, j = [np.array([tok.PROTTXL_EOS_ID], np.int32)], i
        while sum(map(len, row)) < length + 1:
            row.append(ids[j % len(ids)])
            j += 1
        row = np.concatenate(row)[:length + 1]
        out["decoder_input_tokens"][i] = row[:-1]
        out["decoder_target_tokens"][i] = row[1:]
    out["decoder_loss_weights"][:] = 1
    return out
