"""Batch sources the trainer reads: the seqio pipeline (`SeqioSource`) or numpy arrays (`ArraySource`).

A batch source is called as `source(split, batch_size, shard_index, num_shards, repeat)` and
returns a stream of per-host numpy batches (feature-converter keys, `[batch_size, length]` int32)
that also implements `protlm.checkpoints.DataStream`: its `description`, the `batches_consumed`
counter, and `save(directory)` / `restore(directory, batches_consumed)` of its position. The
trainer saves every host's position with each checkpoint and restores it on resume, so a resumed
run reads exactly the batches an uninterrupted one reads, in a time that does not grow with the
step (the seqio stream restores its tf.data iterator; nothing is re-read or re-masked).
TensorFlow and seqio are imported on first use only: this module imports on machines without them
(array-fed GPU runs).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np

Batch = Mapping[str, np.ndarray]

BatchSource = Callable[..., Iterator[Batch]]
_REGISTERED: dict = {}   # the FASTA patterns the built-in seqio tasks were last registered with


@dataclasses.dataclass(frozen=True)
class SeqioSource:
    """Batches from the seqio pipeline (``protlm.data``); TensorFlow is imported on first use.

    Attributes:
      mixture_or_task_name: a registered seqio task or mixture (see ``tasks/``).
      task_feature_lengths: e.g. ``{"inputs": 512, "targets": 512}``.
      fasta_pattern: the training data: a FASTA glob or the shard directory of
        ``tools/shard_fasta.py``; when set, the default tasks are (re-)registered to read it
        (``protlm.data.tasks.register_tasks``).
      validation_fasta_pattern: optional separate validation set (FASTA or shards).
      pack: pack several short sequences per row.
      seed: shuffling / masking seed.
      cache_dir: a seqio cache directory made by ``seqio.scripts.cache_tasks_main`` (Apache Beam):
        the task is read tokenised from it (``use_cached``); masking still runs on the fly.
    """

    mixture_or_task_name: str
    task_feature_lengths: Mapping[str, int]
    fasta_pattern: Optional[str] = None
    validation_fasta_pattern: Optional[str] = None
    pack: bool = True
    seed: int = 0
    cache_dir: Optional[str] = None

    def _register(self):
        """(Re-)register the built-in tasks on ``fasta_pattern`` (env/default when None)."""
        from protlm.data.tf_import import import_tensorflow
        import_tensorflow()   # first, without TensorFlow's start-up noise
        from protlm.data import tasks as data_tasks
        key = (self.fasta_pattern, self.validation_fasta_pattern)
        if _REGISTERED.get("key") != key and (
                self.fasta_pattern or self.mixture_or_task_name in data_tasks.TASK_NAMES):
            data_tasks.register_tasks(fasta_pattern=self.fasta_pattern,
                                      validation_fasta_pattern=self.validation_fasta_pattern)
            _REGISTERED["key"] = key
        if self.cache_dir:
            import seqio
            seqio.add_global_cache_dirs([self.cache_dir])

    def __call__(self, split, batch_size, shard_index=0, num_shards=1, repeat=True):
        """A ``protlm.data.pipeline.BatchStream`` (checkpointable tf.data iterator)."""
        self._register()
        from protlm.data import pipeline
        return pipeline.open_stream(
            self.mixture_or_task_name, dict(self.task_feature_lengths), batch_size=batch_size,
            split=split, seed=self.seed, shard_index=shard_index, num_shards=num_shards,
            pack=self.pack, repeat=repeat, use_cached=bool(self.cache_dir))

    def batch_shapes(self, model_config, batch_size: int) -> dict:
        """Shapes of a batch without reading data (for dry runs), as the model's family has them."""
        from protlm.models import registry
        return registry.get_family(model_config).batch_shapes(
            model_config, self.task_feature_lengths, batch_size, self.pack)


class ArrayStream:
    """Batches ``b, b+1, ...`` of a table of rows; its position is the batch index."""

    def __init__(self, arrays: dict[str, np.ndarray], batch_size: int, shard_index: int,
                 num_shards: int, repeat: bool, description: dict):
        self._arrays, self._batch, self._shard = arrays, batch_size, shard_index
        self._global = batch_size * num_shards
        self._rows = next(iter(arrays.values())).shape[0]
        self._repeat = repeat
        self.description = description
        self.batches_consumed = 0

    def __iter__(self) -> "ArrayStream":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        b = self.batches_consumed
        if not self._repeat and (b + 1) * self._global > self._rows:
            raise StopIteration
        rows = (b * self._global + self._shard * self._batch + np.arange(self._batch)) % self._rows
        self.batches_consumed += 1
        return {k: v[rows] for k, v in self._arrays.items()}

    def save(self, directory: str) -> None:
        """Nothing beyond ``batches_consumed`` (which the checkpoint records) defines the position."""

    def restore(self, directory: str, batches_consumed: int) -> None:
        self.batches_consumed = int(batches_consumed)


@dataclasses.dataclass
class ArraySource:
    """Batches from pre-tokenised arrays (``{key: [num_rows, length]}``, or an .npz path).

    Global batch ``b`` is rows ``b*G .. b*G+G-1`` (mod num_rows, G = global batch); host
    ``h`` takes its contiguous slice, so the global batch does not depend on the number
    of hosts. ``validation`` gives the rows of the validation split (default: train rows).
    """

    train: Any
    validation: Any = None

    @staticmethod
    def _load(arrays) -> dict[str, np.ndarray]:
        if isinstance(arrays, (str, bytes)) or hasattr(arrays, "__fspath__"):
            with np.load(arrays) as f:
                arrays = {k: f[k] for k in f.files}
        arrays = {k: np.asarray(v) for k, v in dict(arrays).items()}
        rows = {v.shape[0] for v in arrays.values()}
        if len(rows) != 1:
            raise ValueError(f"ArraySource: arrays have different row counts: "
                             f"{ {k: v.shape for k, v in arrays.items()} }")
        return arrays

    def __call__(self, split, batch_size, shard_index=0, num_shards=1, repeat=True) -> ArrayStream:
        use_validation = split == "validation" and self.validation is not None
        arrays = self._load(self.validation if use_validation else self.train)
        description = {"source": "arrays", "split": split, "batch_size": batch_size,
                       "shard_index": shard_index, "num_shards": num_shards,
                       "rows": int(next(iter(arrays.values())).shape[0]),
                       "shapes": {k: list(v.shape[1:]) for k, v in sorted(arrays.items())}}
        return ArrayStream(arrays, batch_size, shard_index, num_shards, repeat, description)
