"""The trainer's entry to the data: seqio task -> feature converter -> numpy int32 batches.

Example:
  it = get_batch_iterator("prott5_span_denoising", {"inputs": 512, "targets": 512}, batch_size=32)
  batch = next(it)   # encoder_input_tokens [32, 512], decoder_target_tokens [32, 512], ...

Batches carry exactly the keys of docs/ARCHITECTURE.md (packed: plus segment ids / positions).
The stream is a deterministic function of (task, lengths, batch size, split, seed, shard_index,
num_shards, pack): resuming with `start_batch=k` yields the same batches as skipping the first
k of a fresh iterator (it does so by running the pipeline over them, about the cost of reading).
"""
from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np
import seqio
import tensorflow as tf

from protlm.data.feature_converters import get_feature_converter


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
) -> tf.data.Dataset:
    """The batched tf.data pipeline behind `get_batch_iterator` (same arguments)."""
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
        use_cached=False,
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


def get_batch_iterator(
    task_name: str,
    feature_lengths: Mapping[str, int],
    batch_size: int,
    split: str = "train",
    seed: int = 0,
    shard_index: int = 0,
    num_shards: int = 1,
    pack: bool = True,
    start_batch: int = 0,
    repeat: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """Numpy int32 batches [batch_size, length] of a registered task.

    Args:
      task_name: a seqio task/mixture (e.g. "prott5_span_denoising", "protbert_mlm_uniref50").
      feature_lengths: task lengths, {"inputs": 512, "targets": 512} (MLM: "inputs" suffices).
      batch_size: examples per batch on this shard (host).
      split: "train" (shuffled) or "validation" (file order).
      seed: seeds shuffling and masking; the stream is a deterministic function of it.
      shard_index, num_shards: this host's share (by file when there are enough files, else by record).
      pack: pack several examples per row (adds *_segment_ids / *_positions).
      start_batch: batches to skip first, for exact resume.
      repeat: loop over the data forever (train); False ends after one pass with a zero-padded last batch.

    Yields:
      dict of int32 arrays [batch_size, length] keyed as in docs/ARCHITECTURE.md.
    """
    ds = get_dataset(task_name, feature_lengths, batch_size, split, seed, shard_index, num_shards, pack, repeat)
    if start_batch:
        ds = ds.skip(start_batch)
    for batch in ds.as_numpy_iterator():
        yield {k: np.asarray(v, dtype=np.int32) for k, v in batch.items()}
