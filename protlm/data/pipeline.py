"""The trainer's entry to the data: seqio task -> feature converter -> numpy int32 batches.

Example:
  stream = open_stream("prott5_span_denoising", {"inputs": 512, "targets": 512}, batch_size=32)
  batch = next(stream)   # encoder_input_tokens [32, 512], decoder_target_tokens [32, 512], ...
  stream.save(directory)            # the tf.data iterator position (tf.train.Checkpoint)
  resumed = open_stream(...same arguments...); resumed.restore(directory)
  next(resumed)                     # the batch `stream` would have yielded next

Batches carry exactly the keys of docs/ARCHITECTURE.md (packed: plus segment ids / positions).
The stream is a deterministic function of (task, lengths, batch size, split, seed, shard_index,
num_shards, pack). Its position is the tf.data iterator's own checkpoint (file offsets, shuffle
and packing buffers, seed streams), so restoring takes the same time at step 100 as at step
1,000,000 and re-reads nothing (T5X saves the same state per host with `tf.train.Checkpoint`).
"""
from __future__ import annotations

import inspect
import os
from typing import Iterator, Mapping

import numpy as np
import seqio
import tensorflow as tf

from protlm.data.feature_converters import get_feature_converter

ITERATOR_PREFIX = "iterator"   # tf.train.Checkpoint files: iterator.index, iterator.data-*


def get_task(task_name: str) -> seqio.Task:
    """Looks the task up, registering the project's tasks first when needed."""
    if task_name not in seqio.TaskRegistry.names() and task_name not in seqio.MixtureRegistry.names():
        import tasks  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    return seqio.get_mixture_or_task(task_name)


def get_dataset(
    task_name: str,
    feature_lengths: Mapping[str, int],
    batch_size: int,
    split: str = "train",
    seed: int = 0,
    shard_index: int = 0,
    num_shards: int = 1,
    pack: bool = True,
    repeat: bool = True,
    use_cached: bool = False,
) -> tf.data.Dataset:
    """The batched tf.data pipeline of a registered task (`open_stream` makes it a checkpointable stream).

    Args:
      task_name: a seqio task/mixture (e.g. "prott5_span_denoising", "protbert_mlm_uniref50").
      feature_lengths: task lengths, {"inputs": 512, "targets": 512} (MLM: "inputs" suffices).
      batch_size: examples per batch on this shard (host).
      split: "train" (shuffled) or "validation" (file order).
      seed: seeds shuffling and masking; the stream is a deterministic function of it.
      shard_index, num_shards: this host's share (by file when there are enough files, else by record).
      pack: pack several examples per row (adds *_segment_ids / *_positions).
      repeat: loop over the data forever (train); False ends after one pass with a zero-padded last batch.
      use_cached: read the task's seqio cache (tokenised by `seqio.scripts.cache_tasks_main` on Beam;
        masking still runs here, afresh every epoch). The cache directory must be registered
        (`seqio.add_global_cache_dirs`).

    Returns:
      Batches: dicts of int32 [batch_size, length] keyed as in docs/ARCHITECTURE.md.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index {shard_index} not in [0, num_shards={num_shards})")
    task = get_task(task_name)
    ds = task.get_dataset(
        sequence_length=dict(feature_lengths),
        split=split,
        shuffle=split == "train",
        seed=seed,
        shard_info=seqio.ShardInfo(index=shard_index, num_shards=num_shards) if num_shards > 1 else None,
        num_epochs=None if repeat else 1,
        use_cached=use_cached,
        # An in-memory cache would make every saved iterator state hold the whole split.
        try_in_mem_cache=False,
    )
    # Only the task's output features reach the converter ("id" and "source_tokens" are for
    # tools/show_examples.py; seqio's packer would warn about dropping them).
    ds = ds.map(lambda ex: {k: ex[k] for k in task.output_features}, num_parallel_calls=tf.data.AUTOTUNE)
    ds = get_feature_converter(task, pack=pack)(ds, dict(feature_lengths))
    ds = ds.batch(batch_size, drop_remainder=repeat)
    if not repeat:  # pad the last partial batch with all-zero rows (zero loss weight) to a fixed shape
        def pad(batch):
            return {k: tf.pad(v, [[0, batch_size - tf.shape(v)[0]]] + [[0, 0]] * (len(v.shape) - 1))
                    for k, v in batch.items()}

        ds = ds.map(pad)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(2)


class BatchStream:
    """Numpy int32 batches of a tf.data pipeline, with a position that can be saved and restored.

    Implements `protlm.checkpoints.DataStream`.

    Attributes:
      description: what the stream is (task, lengths, batch size, seed, shard...): a saved
        position only fits a stream with the same description.
      batches_consumed: batches yielded so far (restored with the position).
    """

    def __init__(self, dataset: tf.data.Dataset, description: Mapping):
        self.description = dict(description)
        self.batches_consumed = 0
        self._iterator = iter(dataset)

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self._iterator)
        self.batches_consumed += 1
        return {k: np.asarray(v, dtype=np.int32) for k, v in batch.items()}

    def save(self, directory: str) -> None:
        """Writes the iterator position into `directory` (existing, this process's own)."""
        tf.train.Checkpoint(iterator=self._iterator).write(os.path.join(directory, ITERATOR_PREFIX))

    def restore(self, directory: str, batches_consumed: int = 0) -> None:
        """Moves the iterator to the position saved in `directory`.

        Args:
          directory: where `save` wrote.
          batches_consumed: the count to continue from (what the checkpoint recorded).

        Raises:
          ValueError: the directory holds no iterator state or one that does not fit this pipeline.
        """
        prefix = os.path.join(directory, ITERATOR_PREFIX)
        if not tf.io.gfile.exists(prefix + ".index"):
            raise ValueError(f"no tf.data iterator state in {directory}")
        try:
            tf.train.Checkpoint(iterator=self._iterator).read(prefix).assert_consumed()
        except (tf.errors.OpError, AssertionError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"the tf.data iterator state in {directory} cannot be restored "
                             f"into this input pipeline: {first}") from None
        self.batches_consumed = int(batches_consumed)

    def close(self) -> None:
        """Releases the iterator (its threads and buffers)."""
        self._iterator = None


def open_stream(*args, **kwargs) -> BatchStream:
    """`get_dataset(...)` (same arguments) as a `BatchStream` of numpy int32 batches.

    The stream's description is every argument of `get_dataset` (defaults included): a saved
    position only restores into a stream built with the same ones.
    """
    bound = inspect.signature(get_dataset).bind(*args, **kwargs)
    bound.apply_defaults()
    description = {"source": "seqio", **bound.arguments}
    description["feature_lengths"] = dict(description["feature_lengths"])
    return BatchStream(get_dataset(*bound.args, **bound.kwargs), description)


def get_batch_iterator(*args, **kwargs) -> Iterator[dict[str, np.ndarray]]:
    """`open_stream` for callers that only iterate."""
    return open_stream(*args, **kwargs)
