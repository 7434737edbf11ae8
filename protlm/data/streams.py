"""Parallel protein streams for the recurrent objectives (ProtTXL, ProtXLNet). TF-free numpy.

Transformer-XL trains on a corpus cut into `batch` parallel streams (kimiyoung/transformer-xl
`data_utils.LMOrderedIterator`: the token sequence reshaped to `[batch, -1]`), read in consecutive
segments, so that row `i` of step `t+1` continues row `i` of step `t` and the memory carried in
the train state holds that row's preceding context; XLNet's `create_tfrecords` (zihangdai/xlnet
`data_utils.py`, `batchify`) does the same with segments advancing by `reuse_len`.

A protein corpus does not fit in memory, so the rows are filled on demand: every row is the
concatenation of whole proteins, each followed by the family's separator (Transformer-XL's
`<eos>`, XLNet's `<eod>`: one protein per document), and whenever a row needs more tokens it takes
the next protein of one shared record stream. Given the same record stream and the same sequence
of requests the assignment is deterministic, so a resumed run rebuilds exactly the rows an
uninterrupted one has (`skip` replays the requests, reading records without building batches).

The record stream (`protein_records`) is one host's share: every `num_shards`-th file when there
are at least as many files as hosts, else every `num_shards`-th record; train files are visited in
a seeded order per epoch, records in file order (Transformer-XL's corpus order; no example
shuffle, which would break the continuation). Without a separate validation pattern the splits are
the hash-of-id held-out split of the train files (`protlm.data.splits`), as the seqio tasks use.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from protlm.data import splits as splits_lib
from protlm.data.fasta import expand_paths, read_fasta


class StreamExhausted(RuntimeError):
    """A one-pass record stream ran out before the rows were filled."""


def protein_records(train_pattern: str | Sequence[str], split: str = "train",
                    validation_pattern: str | Sequence[str] | None = None,
                    validation_fraction: float = splits_lib.DEFAULT_VALIDATION_FRACTION,
                    shard_index: int = 0, num_shards: int = 1, seed: int = 0,
                    repeat: bool = True) -> Iterator[str]:
    """Residue strings of one host's share of a split (see the module doc), epoch after epoch.

    Raises:
      FileNotFoundError: a pattern matches no file.
      StreamExhausted: (on iteration) the share holds no record at all.
    """
    if split not in ("train", "validation"):
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'validation'")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index {shard_index} not in [0, num_shards={num_shards})")
    own_files = split == "validation" and validation_pattern
    files = expand_paths(validation_pattern if own_files else train_pattern)
    keep = None if (own_files or validation_pattern) else split
    by_file = len(files) >= num_shards
    if by_file:
        files = files[shard_index::num_shards]
    epoch = 0
    while True:
        order = files
        if split == "train" and len(files) > 1:
            order = [files[i] for i in np.random.default_rng([seed, epoch]).permutation(len(files))]
        count = kept = 0
        for path in order:
            for rec in read_fasta(path):
                if keep is not None and splits_lib.split_of(rec.id, validation_fraction) != keep:
                    continue
                count += 1
                if by_file or (count - 1) % num_shards == shard_index:
                    kept += 1
                    yield rec.sequence
        if kept == 0:
            raise StreamExhausted(f"no {split} records for shard {shard_index}/{num_shards} in "
                                  f"{files[:3]}{' ...' if len(files) > 3 else ''}; use fewer "
                                  "hosts or more files, or set a validation pattern")
        epoch += 1
        if not repeat:
            return


class ProteinStreams:
    """`rows` token streams filled with whole proteins taken on demand from `records`.

    Positions are absolute per row (0 = the row's first token). `window(row, start, n)` returns
    tokens `[start, start + n)` and their document parity (XLNet's alternating `sent_ids`);
    `release(row, upto)` forgets the tokens before `upto`.

    Args:
      records: residue strings (`protein_records`).
      rows: number of streams (this host's batch rows).
      encode: residues -> int32 ids.
      separator: id appended after every protein.
      reverse_rows: rows whose proteins are read backwards (XLNet's `bi_data`).
    """

    def __init__(self, records: Iterator[str], rows: int, encode: Callable[[str], np.ndarray],
                 separator: int, reverse_rows: Sequence[bool] = ()):
        self._records = records
        self._encode = encode
        self._separator = separator
        self._reverse = list(reverse_rows) + [False] * (rows - len(reverse_rows))
        self._tokens = [np.zeros(0, np.int32) for _ in range(rows)]
        self._parity = [np.zeros(0, np.int8) for _ in range(rows)]
        self._base = [0] * rows
        self._docs = [0] * rows
        self.proteins_read = 0

    @property
    def rows(self) -> int:
        return len(self._tokens)

    def _pull(self, row: int) -> None:
        try:
            seq = next(self._records)
        except StopIteration:
            raise StreamExhausted("the record stream ended (one pass over the split)") from None
        ids = np.asarray(self._encode(seq), np.int32)
        if self._reverse[row]:
            ids = ids[::-1]
        ids = np.append(ids, np.int32(self._separator))
        self._tokens[row] = np.concatenate([self._tokens[row], ids])
        self._parity[row] = np.concatenate(
            [self._parity[row], np.full(len(ids), self._docs[row] % 2, np.int8)])
        self._docs[row] += 1
        self.proteins_read += 1

    def end(self, row: int) -> int:
        """Absolute position one past the last buffered token of `row`."""
        return self._base[row] + len(self._tokens[row])

    def window(self, row: int, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """`(tokens [length] int32, parity [length] int8)` of positions `start .. start+length-1`."""
        if start < self._base[row]:
            raise ValueError(f"row {row}: position {start} was released (buffer starts at "
                             f"{self._base[row]})")
        while self.end(row) < start + length:
            self._pull(row)
        off = start - self._base[row]
        return self._tokens[row][off:off + length], self._parity[row][off:off + length]

    def release(self, row: int, upto: int) -> None:
        drop = min(max(0, upto - self._base[row]), len(self._tokens[row]))
        self._tokens[row] = self._tokens[row][drop:]
        self._parity[row] = self._parity[row][drop:]
        self._base[row] += drop
