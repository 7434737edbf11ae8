"""ProtXLNet's objective as numpy: XLNet's permutation LM examples from parallel protein streams.

Follows zihangdai/xlnet `data_utils.py` (`create_tfrecords`, `_split_a_and_b`, `_sample_mask`,
and the parser's `_local_perm` / `num_predict` part), one example per stream row and step:

* the row advances by `reuse_len` tokens per step; the example is the `reuse_len` tokens at the
  row's position (their states become the next step's memory), then segments A and B of
  `seq_len - reuse_len - 3` tokens in total, cut at protein boundaries (`_split_a_and_b`: with
  probability 1/2, or when A reaches the length, B continues A (label 1), else B is a chunk from
  elsewhere in the row (label 0)), laid out `reuse A <sep> B <sep> <cls>` with segment ids
  `0 .. 0 0 1 .. 1 1 2`;
* `num_predict` positions are chosen, half in each part, as spans of 1..5 tokens
  (`P(n) ~ 1/n`), each in a context of `n * mask_alpha / mask_beta` tokens, topped up at random;
* each part gets a factorisation order that permutes every block of `perm_size` positions the
  same way (`_local_perm`). The example stores it as `perm_index` (the order rank of predicted and
  functional tokens, -1 for the visible context) and `perm_part` (0 on the reused part, 1 after:
  the first part never sees the second), from which the model builds XLNet's attention masks
  (`protlm.models.xlnet.permutation_masks`); the targets are the predicted tokens
  (`target_positions`, `target_tokens`, `target_weights`: `target_mapping` as indices).

Differences forced by streaming (documented in docs/ARCHITECTURE.md): a label-0 B is drawn from
the row's look-ahead window instead of the whole row; with `bi_data` the second half of the rows
read every protein backwards (the original reverses whole pre-built rows). Every protein is a
document followed by `<eod>`; every token is a "start piece" (one piece per residue), so an n-gram
span is n tokens. Randomness comes from `numpy.random.default_rng([seed, row, step])`, so the
stream restarts exactly at any step.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from protlm.data import tokens as tok
from protlm.data.streams import ProteinStreams

KEYS = ("input_tokens", "seg_ids", "perm_index", "perm_part", "target_positions",
        "target_tokens", "target_weights", "reverse")
MAX_GRAM = 5


@dataclasses.dataclass(frozen=True)
class PLMConfig:
    """XLNet's data flags (XLNet-Large defaults; ProtXLNet used them, PROTTRANS_FACTS 7)."""

    seq_len: int = 512
    reuse_len: int = 256
    perm_size: int = 256
    num_predict: int = 85
    mask_alpha: int = 6
    mask_beta: int = 1
    bi_data: bool = True

    def __post_init__(self):
        if not 0 < self.reuse_len < self.seq_len - 3:
            raise ValueError(f"need 0 < reuse_len ({self.reuse_len}) < seq_len - 3 "
                             f"({self.seq_len - 3}): [sep] x 2 + [cls] follow segment B")
        for part in (self.reuse_len, self.seq_len - self.reuse_len):
            if part % self.perm_size:
                raise ValueError(f"perm_size {self.perm_size} must divide reuse_len "
                                 f"{self.reuse_len} and seq_len - reuse_len "
                                 f"{self.seq_len - self.reuse_len} (XLNet's _local_perm)")
        if not 0 < self.num_predict <= self.seq_len or self.mask_alpha < self.mask_beta:
            raise ValueError(f"need 0 < num_predict <= seq_len and mask_alpha >= mask_beta; got "
                             f"{self.num_predict}, {self.mask_alpha}, {self.mask_beta}")

    @property
    def segment_len(self) -> int:
        """A + B tokens (`tot_len` of `_split_a_and_b`)."""
        return self.seq_len - self.reuse_len - 3


def sample_mask(seg_len: int, goal: int, rng: np.random.Generator, alpha: int, beta: int,
                reverse: bool = False) -> np.ndarray:
    """`_sample_mask` for one-piece-per-token text: bool `[seg_len]` with exactly `goal` True."""
    mask = np.zeros(seg_len, bool)
    ngrams = np.arange(1, MAX_GRAM + 1)
    pvals = 1.0 / ngrams
    pvals /= pvals.sum()
    num, cur = 0, 0
    while cur < seg_len and num < goal:
        n = min(int(rng.choice(ngrams, p=pvals)), goal - num)
        ctx = (n * alpha) // beta
        l_ctx = int(rng.integers(ctx))
        beg = cur + l_ctx
        if beg + n >= seg_len:   # the original stops when the span would touch the end
            break
        mask[beg:beg + n] = True
        num += n
        cur = beg + n + ctx - l_ctx
    while num < goal:
        i = int(rng.integers(seg_len))
        if not mask[i]:
            mask[i] = True
            num += 1
    return mask[::-1].copy() if reverse else mask


def split_a_and_b(parity: np.ndarray, begin: int, tot_len: int, rng: np.random.Generator
                  ) -> tuple[int, int, int, int, int]:
    """`_split_a_and_b` on a row window: `(a_begin, a_end, b_begin, b_end, label)`.

    `parity` alternates per protein (`sent_ids`); the window must extend past the first protein
    boundary at or after `begin + tot_len` (`xlnet_example` guarantees it).
    """
    data_len = len(parity)
    end = begin + 1
    cut_points = []
    while end < data_len:
        if parity[end] != parity[end - 1]:
            if end - begin >= tot_len:
                break
            cut_points.append(end)
        end += 1
    a_begin = begin
    if not cut_points or rng.random() < 0.5:
        label = 0
        a_end = end if not cut_points else int(rng.choice(cut_points))
        b_len = max(1, tot_len - (a_end - a_begin))
        b_begin = int(rng.integers(0, data_len - 1 - b_len + 1))
        b_end = b_begin + b_len
        while b_begin > 0 and parity[b_begin - 1] == parity[b_begin]:
            b_begin -= 1
        while b_end < data_len - 1 and parity[b_end - 1] == parity[b_end]:
            b_end += 1
    else:
        label = 1
        a_end = int(rng.choice(cut_points))
        b_begin, b_end = a_end, end
    while a_end - a_begin + b_end - b_begin > tot_len:
        if a_end - a_begin > b_end - b_begin:
            a_end -= 1   # the original cuts the right side of A only
        else:
            b_end -= 1
    return a_begin, a_end, b_begin, b_end, label


def local_perm(inputs: np.ndarray, is_masked: np.ndarray, perm_size: int,
               rng: np.random.Generator) -> np.ndarray:
    """`_local_perm`'s factorisation order as `rev_index` `[len]` int32: the rank of every
    predicted or functional (`<sep>`, `<cls>`) token, -1 for the visible context."""
    n = len(inputs)
    index = np.arange(n).reshape(-1, perm_size).T             # [perm_size, n / perm_size]
    index = index[rng.permutation(perm_size)].T.reshape(-1)
    func = (inputs == tok.PROTXLNET_SEP_ID) | (inputs == tok.PROTXLNET_CLS_ID)
    return np.where(~is_masked & ~func, -1, index).astype(np.int32)


def _window_with_boundary(streams: ProteinStreams, row: int, start: int, need: int):
    """A window from `start` at least `need` long that also reaches a protein boundary after
    `start + need - 1`, so `split_a_and_b` never runs off its end."""
    length = need + 1
    while True:
        tokens, parity = streams.window(row, start, length)
        if np.any(parity[need - 1:-1] != parity[need:]):
            return tokens, parity
        length *= 2


def xlnet_example(tokens: np.ndarray, parity: np.ndarray, cfg: PLMConfig,
                  rng: np.random.Generator, reverse: bool = False) -> dict[str, np.ndarray]:
    """One example from a row window starting at the row's position (see the module doc)."""
    r, tot = cfg.reuse_len, cfg.segment_len
    a0, a1, b0, b1, _ = split_a_and_b(parity, r, tot, rng)
    sep, cls = [tok.PROTXLNET_SEP_ID], [tok.PROTXLNET_CLS_ID]
    a, b = tokens[a0:a1], tokens[b0:b1]
    cat = np.concatenate([tokens[:r], a, sep, b, sep, cls]).astype(np.int32)
    seg = np.array([0] * (r + len(a)) + [0] + [1] * len(b) + [1] + [2], np.int32)
    if len(cat) != cfg.seq_len:    # A + B shorter than tot_len only at a stream's very start
        raise AssertionError(f"example of {len(cat)} tokens, expected {cfg.seq_len}")
    goal_1 = cfg.num_predict // 2
    masked = np.concatenate([
        sample_mask(r, cfg.num_predict - goal_1, rng, cfg.mask_alpha, cfg.mask_beta, reverse),
        sample_mask(cfg.seq_len - r, goal_1, rng, cfg.mask_alpha, cfg.mask_beta, reverse)])
    perm = np.concatenate([local_perm(cat[:r], masked[:r], cfg.perm_size, rng),
                           local_perm(cat[r:], masked[r:], cfg.perm_size, rng)])
    func = (cat == tok.PROTXLNET_SEP_ID) | (cat == tok.PROTXLNET_CLS_ID)
    positions = np.flatnonzero((perm >= 0) & ~func)[:cfg.num_predict]
    out = {"input_tokens": cat, "seg_ids": seg, "perm_index": perm,
           "perm_part": (np.arange(cfg.seq_len) >= r).astype(np.int32),
           "target_positions": np.zeros(cfg.num_predict, np.int32),
           "target_tokens": np.zeros(cfg.num_predict, np.int32),
           "target_weights": np.zeros(cfg.num_predict, np.int32),
           "reverse": np.array([int(reverse)], np.int32)}
    out["target_positions"][:len(positions)] = positions
    out["target_tokens"][:len(positions)] = cat[positions]
    out["target_weights"][:len(positions)] = 1
    return out


def stream_batch(streams: ProteinStreams, step: int, cfg: PLMConfig, seed: int,
                 first_row: int = 0, reverse_rows: Sequence[bool] = ()) -> dict[str, np.ndarray]:
    """Batch `step` of every row; `first_row` is this host's first global row (seeds)."""
    rows = []
    for r in range(streams.rows):
        start = step * cfg.reuse_len
        tokens, parity = _window_with_boundary(streams, r, start,
                                               cfg.reuse_len + cfg.segment_len + 1)
        rng = np.random.default_rng([seed, first_row + r, step])
        rows.append(xlnet_example(tokens, parity, cfg, rng,
                                  bool(reverse_rows[r]) if r < len(reverse_rows) else False))
        streams.release(r, start + cfg.reuse_len)
    return {k: np.stack([row[k] for row in rows]) for k in KEYS}


def advance(streams: ProteinStreams, step: int, cfg: PLMConfig) -> None:
    """The record requests of `stream_batch` for `step` without building the examples."""
    for r in range(streams.rows):
        start = step * cfg.reuse_len
        _window_with_boundary(streams, r, start, cfg.reuse_len + cfg.segment_len + 1)
        streams.release(r, start + cfg.reuse_len)


def bi_data_rows(rows: int, bi_data: bool) -> list[bool]:
    """XLNet's `bi_data` layout: the second half of the rows read backwards."""
    if bi_data and rows % 2:
        raise ValueError(f"bi_data needs an even number of rows per host, got {rows}")
    return [bi_data and r >= rows // 2 for r in range(rows)]
