"""seqio preprocessors for the ProtTrans objectives (tf ops only, seeded, deterministic).

Pipeline of every pretraining task (see `protlm.data.tasks`):
  source {"id", "sequence"} -> `tokenize_sequence` -> {"id", "source_tokens"}
  -> seqio.CacheDatasetPlaceholder -> repeat (per epoch) -> one objective below.
Everything before the placeholder is deterministic, so a seqio cache made by Beam
(`seqio.scripts.cache_tasks_main`) holds tokens only and every epoch masks afresh.

Objectives (each also keeps "id" and the cropped "source_tokens" for `tools/show_examples.py`):
  `prott5_span_denoising`: the ProtT5 objective (span length 1). A uniformly random crop to the
    task length so that inputs incl. EOS fit; exactly floor(15 % of the residues + 0.5) of them
    (at least 1, at most all but one), chosen uniformly, each replaced by its own sentinel
    `<extra_id_0>, <extra_id_1>, ...` in order; inputs end in EOS; targets = cropped sequence + EOS.
    With only 100 sentinels the masks are capped at 100: at the paper's length 512 (511 residues)
    77 are drawn, so the cap only lowers the density of crops longer than 666 residues (a warning
    is logged then).
  `span_corruption`: classic T5 (random spans, mean length `mean_noise_span_length`, sentinel-only
    targets), a re-implementation of t5.data.preprocessors.span_corruption with stateless ops.
  `bert_mlm`: [CLS] seq [SEP]; exactly floor(15 % + 0.5) of the residues selected; of those 80 %
    [MASK], 10 % a random standard amino acid (uniform over the 20, may equal the original, as in
    BERT), 10 % unchanged; `loss_weights` = 1 exactly on the selected positions.

The two ProtTrans objectives have one numpy twin each in `protlm.data.arrays` (for machines
without TensorFlow): both draw every choice from `protlm.data.random_bits`, so the same example key
and tokens give identical examples (tests/data/test_objective_pair.py).

Determinism: seqio.map_over_dataset(num_seeds=1) gives each example a seed from the task seed;
`random_bits.example_key_tf` folds it with a hash of the record id, so hosts and shards
(different records) draw independent masks and every epoch (a new seed from the stream) draws
new ones.
"""
from __future__ import annotations

import functools
import logging
from typing import Mapping

import seqio
import tensorflow as tf

from protlm.data import random_bits as rb
from protlm.data import tokens as tok

Features = Mapping[str, tf.Tensor]

DEFAULT_NOISE_DENSITY = rb.DEFAULT_NOISE_DENSITY
DEFAULT_MEAN_NOISE_SPAN_LENGTH = 3.0


# --------------------------------------------------------------------------------------- helpers
def random_crop(tokens: tf.Tensor, max_length: int | None, key: tf.Tensor) -> tf.Tensor:
    """A uniformly random window of at most `max_length` tokens ([n] -> [min(n, max_length)])."""
    if max_length is None:
        return tokens
    n = tf.size(tokens)
    max_start = tf.maximum(n - max_length, 0)
    word = rb.bits_tf(key, rb.CROP, 1)[0]
    start = tf.cast(word % tf.cast(max_start + 1, tf.uint32), tf.int32)
    return tokens[start : start + max_length]


def select_exactly(n: tf.Tensor, k: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
    """Bool [n] with exactly `k` True positions: the k smallest (bits, position) of the SELECT stream."""
    word = tf.bitwise.right_shift(rb.bits_tf(key, rb.SELECT, n), tf.constant(1, tf.uint32))
    order_key = tf.bitwise.left_shift(tf.cast(word, tf.int64), 32) + tf.range(n, dtype=tf.int64)
    ranks = tf.argsort(tf.argsort(order_key))
    return ranks < k


def num_masks(n: tf.Tensor, density: float, cap: int | None = None) -> tf.Tensor:
    """floor(n * density + 0.5) clipped to [1, n - 1] (0 for n < 2) and to `cap` (float64 maths)."""
    k = tf.cast(tf.floor(tf.cast(n, tf.float64) * density + 0.5), tf.int32)
    k = tf.clip_by_value(k, tf.minimum(1, n - 1), tf.maximum(n - 1, 0))
    if cap is not None:
        k = tf.minimum(k, cap)
    return k


def _length(sequence_length: Mapping[str, int] | None, key: str) -> int | None:
    if not sequence_length:
        return None
    return sequence_length.get(key)


# -------------------------------------------------------------------------------------- tokenize
def tokenize_sequence(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
    """"sequence" (string) -> "source_tokens" (int32 [n], residues only) with the targets vocabulary."""
    vocab = output_features["targets"].vocabulary

    def fn(ex):
        out = {k: v for k, v in ex.items() if k != "sequence"}
        out["source_tokens"] = tf.cast(vocab.encode_tf(ex["sequence"]), tf.int32)
        return out

    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


# --------------------------------------------------------------------------- ProtT5 denoising
def span_denoise_example(
    tokens: tf.Tensor, key: tf.Tensor, crop_length: int | None, noise_density: float = DEFAULT_NOISE_DENSITY
) -> dict[str, tf.Tensor]:
    """ProtT5 denoising of one tokenized sequence (numpy twin: `arrays.span_denoise_example`).

    Args:
      tokens: int32 [n] residue ids (ProtT5 vocabulary, no EOS).
      key: uint32 [2] example key (`random_bits`).
      crop_length: residues kept (the task length minus 1 for EOS); None = no crop.
      noise_density: fraction of residues replaced by sentinels.

    Returns:
      {"inputs": [m + 1], "targets": [m + 1], "source_tokens": [m]} with m = cropped length.
    """
    crop = random_crop(tokens, crop_length, key)
    n = tf.size(crop)
    mask = select_exactly(n, num_masks(n, noise_density, tok.PROTT5_NUM_SENTINELS), key)
    sentinel = tok.PROTT5_FIRST_SENTINEL_ID + 1 - tf.cumsum(tf.cast(mask, tf.int32))  # 127, 126, ...
    eos = tf.constant([tok.PROTT5_EOS_ID], tf.int32)
    inputs = tf.concat([tf.where(mask, sentinel, crop), eos], 0)
    return {"inputs": inputs, "targets": tf.concat([crop, eos], 0), "source_tokens": crop}


def prott5_span_denoising(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int] | None = None,
    noise_density: float = DEFAULT_NOISE_DENSITY,
) -> tf.data.Dataset:
    """The ProtT5 objective over {"id", "source_tokens"}; see the module docstring."""
    lengths = [x for x in (_length(sequence_length, "inputs"), _length(sequence_length, "targets")) if x]
    crop_length = min(lengths) - 1 if lengths else None
    if crop_length is not None and round(crop_length * noise_density) > tok.PROTT5_NUM_SENTINELS:
        logging.warning("crop length %d x density %.2f needs more than %d sentinels: masks capped at %d",
                        crop_length, noise_density, tok.PROTT5_NUM_SENTINELS, tok.PROTT5_NUM_SENTINELS)

    @seqio.map_over_dataset(num_seeds=1)
    def fn(ex, seed):
        out = {k: v for k, v in ex.items() if k != "source_tokens"}
        out.update(span_denoise_example(ex["source_tokens"], rb.example_key_tf(seed, ex["id"]), crop_length,
                                        noise_density))
        return out

    return fn(dataset)


# ------------------------------------------------------------------------- T5 span corruption
def random_spans_helper(
    inputs_length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """Longest raw length whose span-corrupted inputs (incl. EOS) fit `inputs_length`.

    Returns:
      (tokens_length, targets_length incl. EOS). Same arithmetic as t5's `random_spans_helper`.
    """

    def lengths(tokens_length: int) -> tuple[int, int]:
        num_noise = int(round(tokens_length * noise_density))
        num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
        return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1

    tokens_length = 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    return tokens_length, lengths(tokens_length)[1]


def _random_segmentation(num_items: tf.Tensor, num_segments: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random partition of `num_items` into `num_segments` non-empty parts: lengths [num_segments]."""
    first = tf.cast(tf.range(num_items - 1) < num_segments - 1, tf.int32)
    first = tf.gather(first, tf.argsort(tf.random.stateless_uniform([num_items - 1], seed)))
    segment_id = tf.cumsum(tf.pad(first, [[1, 0]]))
    return tf.math.segment_sum(tf.ones_like(segment_id), segment_id)


def random_spans_noise_mask(
    length: tf.Tensor, noise_density: float, seed: tf.Tensor, mean_noise_span_length: float
) -> tf.Tensor:
    """Bool [length] noise mask of alternating non-noise/noise spans (t5 algorithm, stateless)."""
    orig_length = length
    length = tf.maximum(length, 2)
    num_noise = tf.cast(tf.round(tf.cast(length, tf.float32) * noise_density), tf.int32)
    num_noise = tf.clip_by_value(num_noise, 1, length - 1)
    num_spans = tf.cast(tf.round(tf.cast(num_noise, tf.float32) / mean_noise_span_length), tf.int32)
    num_spans = tf.clip_by_value(num_spans, 1, tok.PROTT5_NUM_SENTINELS)
    noise_lengths = _random_segmentation(num_noise, num_spans, seed[0])
    nonnoise_lengths = _random_segmentation(length - num_noise, num_spans, seed[1])
    interleaved = tf.reshape(tf.stack([nonnoise_lengths, noise_lengths], axis=1), [num_spans * 2])
    starts = tf.cumsum(interleaved)[:-1]
    indicator = tf.math.unsorted_segment_sum(tf.ones_like(starts), starts, length)
    is_noise = tf.equal(tf.cumsum(indicator) % 2, 1)
    return is_noise[:orig_length]


def spans_to_unique_sentinel(tokens: tf.Tensor, span_mask: tf.Tensor) -> tf.Tensor:
    """Replaces each masked span by one sentinel (127, 126, ...) and drops the rest of the span."""
    prev = tf.pad(span_mask[:-1], [[1, 0]])
    first = tf.logical_and(span_mask, tf.logical_not(prev))
    subsequent = tf.logical_and(span_mask, prev)
    sentinel = tok.PROTT5_FIRST_SENTINEL_ID + 1 - tf.cumsum(tf.cast(first, tf.int32))
    return tf.boolean_mask(tf.where(first, sentinel, tokens), tf.logical_not(subsequent))


def span_corrupt_example(
    tokens: tf.Tensor, key: tf.Tensor, crop_length: int | None, noise_density: float, mean_noise_span_length: float
) -> dict[str, tf.Tensor]:
    """Classic T5 span corruption of one sequence (key: uint32 [2] example key)."""
    crop = random_crop(tokens, crop_length, key)
    seeds = tf.random.experimental.stateless_split(tf.cast(key, tf.int64), 2)   # noise / non-noise lengths
    mask = random_spans_noise_mask(tf.size(crop), noise_density, seeds, mean_noise_span_length)
    eos = tf.constant([tok.PROTT5_EOS_ID], tf.int32)
    return {
        "inputs": tf.concat([spans_to_unique_sentinel(crop, mask), eos], 0),
        "targets": tf.concat([spans_to_unique_sentinel(crop, tf.logical_not(mask)), eos], 0),
        "source_tokens": crop,
    }


def span_corruption(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int] | None = None,
    noise_density: float = DEFAULT_NOISE_DENSITY,
    mean_noise_span_length: float = DEFAULT_MEAN_NOISE_SPAN_LENGTH,
) -> tf.data.Dataset:
    """T5 span corruption (sentinel-only targets) with a random crop that makes both features fit."""
    inputs_length = _length(sequence_length, "inputs")
    crop_length = None
    if inputs_length:
        crop_length, targets_length = random_spans_helper(inputs_length, noise_density, mean_noise_span_length)
        limit = _length(sequence_length, "targets")
        while limit and targets_length > limit and crop_length > 1:
            crop_length -= 1
            num_noise = int(round(crop_length * noise_density))
            targets_length = num_noise + max(int(round(num_noise / mean_noise_span_length)), 1) + 1
        spans = int(round(round(crop_length * noise_density) / mean_noise_span_length))
        if spans > tok.PROTT5_NUM_SENTINELS:
            raise ValueError(
                f"span_corruption with inputs length {inputs_length}, density {noise_density} and mean span "
                f"{mean_noise_span_length} needs {spans} sentinels (> {tok.PROTT5_NUM_SENTINELS}); "
                "use a shorter length or a longer mean span")

    @seqio.map_over_dataset(num_seeds=1)
    def fn(ex, seed):
        out = {k: v for k, v in ex.items() if k != "source_tokens"}
        out.update(span_corrupt_example(ex["source_tokens"], rb.example_key_tf(seed, ex["id"]), crop_length,
                                        noise_density, mean_noise_span_length))
        return out

    return fn(dataset)


# -------------------------------------------------------------------------------------- BERT MLM
def mlm_example(
    tokens: tf.Tensor, key: tf.Tensor, crop_length: int | None, select_fraction: float = DEFAULT_NOISE_DENSITY
) -> dict[str, tf.Tensor]:
    """BERT masking of one sequence (ProtBert ids, no specials; numpy twin: `arrays.mlm_example`).

    Returns:
      {"inputs", "targets", "loss_weights"}: int32 [m + 2] for [CLS] crop [SEP]; "source_tokens" [m].
    """
    crop = random_crop(tokens, crop_length, key)
    n = tf.size(crop)
    selected = select_exactly(n, num_masks(n, select_fraction), key)
    action = tf.bitwise.right_shift(rb.bits_tf(key, rb.ACTION, n), tf.constant(8, tf.uint32))
    to_mask = tf.logical_and(selected, action < rb.MLM_MASK_BELOW)
    to_random = tf.logical_and(selected, tf.logical_and(action >= rb.MLM_MASK_BELOW, action < rb.MLM_RANDOM_BELOW))
    pool = tf.constant(tok.PROTBERT_STANDARD_RESIDUE_IDS, tf.int32)
    pick = rb.bits_tf(key, rb.RANDOM_RESIDUE, n) % tf.constant(len(tok.PROTBERT_STANDARD_RESIDUE_IDS), tf.uint32)
    random_ids = tf.gather(pool, tf.cast(pick, tf.int32))
    masked = tf.where(to_mask, tok.PROTBERT_MASK_ID, tf.where(to_random, random_ids, crop))
    cls = tf.constant([tok.PROTBERT_CLS_ID], tf.int32)
    sep = tf.constant([tok.PROTBERT_SEP_ID], tf.int32)
    zero = tf.zeros([1], tf.int32)
    return {
        "inputs": tf.concat([cls, masked, sep], 0),
        "targets": tf.concat([cls, crop, sep], 0),
        "loss_weights": tf.concat([zero, tf.cast(selected, tf.int32), zero], 0),
        "source_tokens": crop,
    }


def bert_mlm(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int] | None = None,
    select_fraction: float = DEFAULT_NOISE_DENSITY,
) -> tf.data.Dataset:
    """ProtBert MLM over {"id", "source_tokens"}: crop to the inputs length minus [CLS]/[SEP]."""
    inputs_length = _length(sequence_length, "inputs")
    crop_length = inputs_length - 2 if inputs_length else None

    @seqio.map_over_dataset(num_seeds=1)
    def fn(ex, seed):
        out = {k: v for k, v in ex.items() if k != "source_tokens"}
        out.update(mlm_example(ex["source_tokens"], rb.example_key_tf(seed, ex["id"]), crop_length, select_fraction))
        return out

    return fn(dataset)


def with_options(preprocessor, **kwargs):
    """`functools.partial` that keeps seqio's special-kwarg detection (sequence_length) working."""
    return functools.partial(preprocessor, **kwargs)


# ------------------------------------------------------------------------------------ ProtAlbert
_ALBERT_ID_FEATURES = ("inputs", "targets", "source_tokens")


def protalbert_mlm(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int] | None = None,
    select_fraction: float = DEFAULT_NOISE_DENSITY,
) -> tf.data.Dataset:
    """ProtAlbert MLM over {"id", "source_tokens"} (ProtAlbert ids): exactly `bert_mlm`'s rule.

    ALBERT's masking (google-research/albert `create_pretraining_data.py` with ProtTrans' settings:
    single residues, 15 %, 80/10/10) is BERT's, so the one implementation runs on ids translated
    to ProtBert's and back (`tokens.PROTALBERT_TO_PROTBERT`, `tokens.PROTBERT_TO_PROTALBERT`).
    No sentence-order examples: one protein per document leaves no sentence order to predict.
    """
    to_bert = tf.constant(tok.PROTALBERT_TO_PROTBERT, tf.int32)
    to_albert = tf.constant(tok.PROTBERT_TO_PROTALBERT, tf.int32)

    def into_bert(ex):
        return {**ex, "source_tokens": tf.gather(to_bert, ex["source_tokens"])}

    def into_albert(ex):
        return {k: tf.gather(to_albert, v) if k in _ALBERT_ID_FEATURES else v for k, v in ex.items()}

    dataset = dataset.map(into_bert, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = bert_mlm(dataset, sequence_length, select_fraction)
    return dataset.map(into_albert, num_parallel_calls=tf.data.AUTOTUNE)
