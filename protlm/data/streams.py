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
of requests the assignment is deterministic; the rows' buffered tokens (`ProteinStreams.state`)
and the record stream's position (`ProteinRecords.position`) are all a checkpoint needs to resume
exactly, without re-reading what was consumed.

The record stream (`ProteinRecords`) is one host's share: every `num_shards`-th file when there
are at least as many files as hosts, else every `num_shards`-th record; train files are visited in
a seeded order per epoch, records in file order (Transformer-XL's corpus order; no example
shuffle, which would break the continuation). Without a separate validation pattern the splits are
the hash-of-id held-out split of the train files (`protlm.data.splits`), as the seqio tasks use.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from protlm.data import splits as splits_lib
from protlm.data.fasta import expand_paths, read_fasta


class StreamExhausted(RuntimeError):
    """A one-pass record stream ran out before the rows were filled."""


class ProteinRecords:
    """Residue strings of one host's share of a split (see the module doc), epoch after epoch.

    An iterator whose `position` (epoch, file, records read in that file, records counted for
    record-level sharding) restores it exactly: `ProteinRecords(..., position=p)` skips the
    already-read records of one file only, so resuming does not re-read the epoch.

    Raises:
      FileNotFoundError: a pattern matches no file.
      StreamExhausted: (on iteration) the share holds no record at all.
    """

    def __init__(self, train_pattern: str | Sequence[str], split: str = "train",
                 validation_pattern: str | Sequence[str] | None = None,
                 validation_fraction: float = splits_lib.DEFAULT_VALIDATION_FRACTION,
                 shard_index: int = 0, num_shards: int = 1, seed: int = 0,
                 repeat: bool = True, position: Mapping[str, int] | None = None):
        if split not in ("train", "validation"):
            raise ValueError(f"unknown split {split!r}; expected 'train' or 'validation'")
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard_index {shard_index} not in [0, num_shards={num_shards})")
        own_files = split == "validation" and validation_pattern
        files = expand_paths(validation_pattern if own_files else train_pattern)
        self._keep = None if (own_files or validation_pattern) else split
        self._by_file = len(files) >= num_shards
        self._files = files[shard_index::num_shards] if self._by_file else files
        self._split, self._fraction, self._seed, self._repeat = split, validation_fraction, seed, repeat
        self._shard, self._num_shards = shard_index, num_shards
        self.position = {"epoch": 0, "file": 0, "in_file": 0, "count": 0, "kept": 0}
        self.position.update(position or {})
        self._it = self._generate()

    def _order(self, epoch: int) -> list[str]:
        if self._split == "train" and len(self._files) > 1:
            perm = np.random.default_rng([self._seed, epoch]).permutation(len(self._files))
            return [self._files[i] for i in perm]
        return self._files

    def _generate(self) -> Iterator[str]:
        pos = self.position
        while True:
            order = self._order(pos["epoch"])
            while pos["file"] < len(order):
                skip = pos["in_file"]
                for i, rec in enumerate(read_fasta(order[pos["file"]])):
                    if i < skip:
                        continue
                    pos["in_file"] = i + 1
                    if self._keep is not None and splits_lib.split_of(
                            rec.id, self._fraction) != self._keep:
                        continue
                    pos["count"] += 1
                    if self._by_file or (pos["count"] - 1) % self._num_shards == self._shard:
                        pos["kept"] += 1
                        yield rec.sequence
                pos["file"], pos["in_file"] = pos["file"] + 1, 0
            if pos["kept"] == 0:
                files = self._files
                raise StreamExhausted(
                    f"no {self._split} records for shard {self._shard}/{self._num_shards} in "
                    f"{files[:3]}{' ...' if len(files) > 3 else ''}; use fewer hosts or more "
                    "files, or set a validation pattern")
            pos.update(epoch=pos["epoch"] + 1, file=0, in_file=0, count=0, kept=0)
            if not self._repeat:
                return

    def __iter__(self) -> "ProteinRecords":
        return self

    def __next__(self) -> str:
        return next(self._it)


class ProteinStreams:
    """`rows` token streams filled with whole proteins taken on demand from `records`.

    Positions are absolute per row (0 = the row's first token). `window(row, start, n)` returns
    tokens `[start, start + n)` and their document parity (XLNet's alternating `sent_ids`);
    `release(row, upto)` forgets the tokens before `upto`.

    Args:
      records: residue strings (`ProteinRecords`).
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

    def state(self) -> dict[str, np.ndarray]:
        """The rows' buffered tokens and counters (numpy arrays: `np.savez`-able)."""
        out = {"base": np.asarray(self._base, np.int64), "docs": np.asarray(self._docs, np.int64),
               "proteins_read": np.asarray(self.proteins_read, np.int64)}
        for r in range(self.rows):
            out[f"tokens_{r}"], out[f"parity_{r}"] = self._tokens[r], self._parity[r]
        return out

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Set the rows to a `state()` of streams with as many rows.

        Raises:
          ValueError: the state has another number of rows.
        """
        if len(state["base"]) != self.rows:
            raise ValueError(f"saved stream state has {len(state['base'])} rows, this stream "
                             f"{self.rows}: resume with the same per-host batch size")
        self._base = [int(b) for b in state["base"]]
        self._docs = [int(d) for d in state["docs"]]
        self.proteins_read = int(state["proteins_read"])
        self._tokens = [np.asarray(state[f"tokens_{r}"], np.int32) for r in range(self.rows)]
        self._parity = [np.asarray(state[f"parity_{r}"], np.int8) for r in range(self.rows)]
