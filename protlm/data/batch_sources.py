"""Batch sources the trainer reads: the seqio pipeline (`SeqioSource`) or numpy arrays (`ArraySource`).

A batch source is called as `source(split, batch_size, start_batch, shard_index, num_shards,
repeat)` and returns an iterator of per-host numpy batches (feature-converter keys,
`[batch_size, length]` int32). `start_batch` batches are skipped, so a resumed run sees exactly the
batches an uninterrupted one would. TensorFlow and seqio are imported on first use only: this module
imports on machines without them (array-fed GPU runs).
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
      fasta_pattern: FASTA glob of the training data; when set, the default tasks are
        (re-)registered to read it (``protlm.data.tasks.register_tasks``).
      validation_fasta_pattern: optional separate validation FASTA glob.
      pack: pack several short sequences per row.
      seed: shuffling / masking seed.
    """

    mixture_or_task_name: str
    task_feature_lengths: Mapping[str, int]
    fasta_pattern: Optional[str] = None
    validation_fasta_pattern: Optional[str] = None
    pack: bool = True
    seed: int = 0

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

    def __call__(self, split, batch_size, start_batch=0, shard_index=0, num_shards=1,
                 repeat=True) -> Iterator[Batch]:
        self._register()
        from protlm.data import pipeline
        return pipeline.get_batch_iterator(
            self.mixture_or_task_name, dict(self.task_feature_lengths), batch_size=batch_size,
            split=split, seed=self.seed, shard_index=shard_index, num_shards=num_shards,
            pack=self.pack, start_batch=start_batch, repeat=repeat)

    def batch_shapes(self, model_config, batch_size: int) -> dict:
        """Shapes of a batch without reading data (for dry runs), as the model's family has them."""
        from protlm.models import registry
        return registry.get_family(model_config).batch_shapes(
            model_config, self.task_feature_lengths, batch_size, self.pack)


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

    def __call__(self, split, batch_size, start_batch=0, shard_index=0, num_shards=1,
                 repeat=True) -> Iterator[Batch]:
        arrays = self._load(self.validation if split == "validation" and self.validation
                            is not None else self.train)
        n = next(iter(arrays.values())).shape[0]
        global_batch = batch_size * num_shards
        b = start_batch
        while repeat or (b + 1) * global_batch <= n:
            rows = (b * global_batch + shard_index * batch_size + np.arange(batch_size)) % n
            yield {k: v[rows] for k, v in arrays.items()}
            b += 1
