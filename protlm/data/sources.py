"""`FastaDataSource`: a seqio DataSource streaming {"id", "sequence"} from sharded FASTA.

Splits: "train" and "validation". Without a validation pattern, the validation split is the
deterministic hash-of-id held-out split of the train files (`protlm.data.splits.is_validation`, the rule
`tools/shard_fasta.py` uses) and the train split is the rest. With a validation pattern, both splits
read their own files unfiltered.

Sharding: seqio passes a `ShardInfo` when there are at least as many files as shards; each shard
then reads every `num_shards`-th file. With fewer files, seqio shards the example stream instead.
Shuffling: file order is shuffled per epoch (seeded) and `cycle_length` files are interleaved one
record at a time; the task then shuffles examples in a buffer.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import seqio
import tensorflow as tf

from protlm.data import splits as splits_lib
from protlm.data.fasta import expand_paths, read_fasta

PatternLike = str | Sequence[str] | Callable[[], str | Sequence[str] | None] | None

_SIGNATURE = {"id": tf.TensorSpec([], tf.string), "sequence": tf.TensorSpec([], tf.string)}
_KEEP_ALL, _KEEP_TRAIN, _KEEP_VALIDATION = 0, 1, 2


def _records(path: bytes, keep: int, fraction: float):
    for rec in read_fasta(path.decode("utf-8")):
        if keep != _KEEP_ALL and splits_lib.is_validation(rec.id, fraction) != (keep == _KEEP_VALIDATION):
            continue
        yield {"id": rec.id, "sequence": rec.sequence}


class FastaDataSource(seqio.DataSource):
    """Streams FASTA records as {"id": string, "sequence": string} (residues upper case)."""

    def __init__(
        self,
        train_pattern: PatternLike,
        validation_pattern: PatternLike = None,
        validation_fraction: float = splits_lib.DEFAULT_VALIDATION_FRACTION,
        cycle_length: int = 16,
        missing_pattern_hint: str = "",
    ):
        """Args:
        train_pattern: glob / list / comma list of FASTA files, or a zero-argument callable returning
          one (resolved when the dataset is built, so env vars and flags can be set late).
        validation_pattern: the same for a separate validation set; None = hash held-out split of train.
        validation_fraction: size of the hash held-out split.
        cycle_length: number of files read in an interleaved way.
        missing_pattern_hint: how to set the pattern, shown when it resolves to nothing.
        """
        super().__init__(splits=("train", "validation"))
        self._train_pattern = train_pattern
        self._validation_pattern = validation_pattern
        self._fraction = validation_fraction
        self._cycle_length = cycle_length
        self._hint = missing_pattern_hint

    @staticmethod
    def _resolve(pattern: PatternLike):
        return pattern() if callable(pattern) else pattern

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return False

    def _plan(self, split: str) -> tuple[list[str], int]:
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; expected one of {self.splits}")
        train = self._resolve(self._train_pattern)
        validation = self._resolve(self._validation_pattern)
        if split == "validation" and validation:
            return expand_paths(validation), _KEEP_ALL
        if not train:
            raise ValueError(f"no FASTA pattern configured for this task. {self._hint}".strip())
        if validation:
            return expand_paths(train), _KEEP_ALL
        return expand_paths(train), _KEEP_VALIDATION if split == "validation" else _KEEP_TRAIN

    def list_shards(self, split: str) -> Sequence[str]:
        return self._plan(split)[0]

    def get_dataset(
        self,
        split: str = "train",
        shuffle: bool = True,
        seed: int | None = None,
        shard_info: seqio.ShardInfo | None = None,
        *,
        sequence_length=None,
        use_cached: bool = False,
        num_epochs: int | None = 1,
    ) -> tf.data.Dataset:
        files, keep = self._plan(split)
        if shard_info is not None and shard_info.num_shards > 1:
            files = files[shard_info.index :: shard_info.num_shards]
        files_ds = tf.data.Dataset.from_tensor_slices(files)
        if shuffle:
            files_ds = files_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        fraction = self._fraction

        def read(path):
            return tf.data.Dataset.from_generator(
                _records, args=(path, keep, fraction), output_signature=_SIGNATURE)

        return files_ds.interleave(
            read, cycle_length=max(1, min(self._cycle_length, len(files))), block_length=1)


def env_pattern(var: str, default: str | None = None) -> Callable[[], str | None]:
    """A lazily evaluated pattern: `$var` when set (and non-empty), else `default`."""

    def resolve():
        return os.environ.get(var) or default

    resolve.__name__ = f"env_{var}"
    return resolve
