"""Counter-based random bits with one definition and two bit-identical implementations.

The objectives (`protlm.data.preprocessors` for TensorFlow / seqio, `protlm.data.arrays` for numpy)
draw every random choice of an example (crop start, masked positions, BERT's 80/10/10 actions and
random residues) from `bits(key, stream, n)`: 32-bit words of a hash of (example key, stream,
position). The hash is Wellons' `triple32` integer finalizer (uint32 multiply, xor, shift), which
numpy and TensorFlow compute exactly alike, so the same key gives the same example in both
(tests/data/test_objective_pair.py). A key is two uint32 words.

The TensorFlow side is imported lazily: numpy users (GPU machines without TF) import this module.
"""
from __future__ import annotations

import numpy as np

# Stream ids: independent draws of one example.
CROP, SELECT, ACTION, RANDOM_RESIDUE = 1, 2, 3, 4
_GOLDEN = 0x9E3779B9
_M1, _M2, _M3 = 0xED5AD4BB, 0xAC4C1B51, 0x31848BAB
_SALT = 0x68E31DA4
U24 = float(1 << 24)


def _triple32_np(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.uint32)
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint32(17))
        x = x * np.uint32(_M1)
        x = x ^ (x >> np.uint32(11))
        x = x * np.uint32(_M2)
        x = x ^ (x >> np.uint32(15))
        x = x * np.uint32(_M3)
        return x ^ (x >> np.uint32(14))


def _stream_base_np(key: np.ndarray, stream: int) -> np.uint32:
    k0, k1 = np.asarray(key, np.uint32)
    with np.errstate(over="ignore"):
        return _triple32_np(k0 ^ _triple32_np(k1 + np.uint32(stream * _GOLDEN & 0xFFFFFFFF)))


def bits_np(key: np.ndarray, stream: int, n: int) -> np.ndarray:
    """uint32 [n]: word i of `stream` for example `key` (uint32 [2])."""
    base = _stream_base_np(key, stream)
    with np.errstate(over="ignore"):
        counter = np.arange(n, dtype=np.uint32) * np.uint32(_GOLDEN) + np.uint32(_SALT)
        return _triple32_np(base ^ _triple32_np(counter))


def row_key_np(seed: int, row: int) -> np.ndarray:
    """The key of row `row` of a numpy batch built with `seed` (uint32 [2])."""
    s = np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
    lo, hi = np.uint32(s & np.uint64(0xFFFFFFFF)), np.uint32(s >> np.uint64(32))
    with np.errstate(over="ignore"):
        return np.array([_triple32_np(lo ^ _triple32_np(np.uint32(row))), _triple32_np(hi + np.uint32(_SALT))],
                        np.uint32)


def _triple32_tf(x):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    def shift(v, s):
        return tf.bitwise.right_shift(v, tf.constant(s, tf.uint32))

    x = tf.bitwise.bitwise_xor(x, shift(x, 17)) * tf.constant(_M1, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, shift(x, 11)) * tf.constant(_M2, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, shift(x, 15)) * tf.constant(_M3, tf.uint32)
    return tf.bitwise.bitwise_xor(x, shift(x, 14))


def bits_tf(key, stream: int, n):
    """TensorFlow twin of `bits_np`: uint32 [n] for a uint32 [2] key tensor."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    key = tf.cast(key, tf.uint32)
    base = _triple32_tf(tf.bitwise.bitwise_xor(
        key[0], _triple32_tf(key[1] + tf.constant(stream * _GOLDEN & 0xFFFFFFFF, tf.uint32))))
    counter = tf.cast(tf.range(n), tf.uint32) * tf.constant(_GOLDEN, tf.uint32) + tf.constant(_SALT, tf.uint32)
    return _triple32_tf(tf.bitwise.bitwise_xor(base, _triple32_tf(counter)))


def example_key_tf(seed, record_id):
    """The key of a pipeline example: seqio's per-example seed (int64 [2]) folded with the record id.

    Folding in the id makes hosts that share a seed stream (same task seed, different records)
    draw independent masks.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    seed = tf.cast(tf.stack(seed) if isinstance(seed, (tuple, list)) else seed, tf.int64)
    words = tf.cast(seed, tf.uint32)   # the low 32 bits of each seed word
    id_word = tf.cast(tf.strings.to_hash_bucket_fast(record_id, 2**31 - 1), tf.uint32)
    return tf.stack([_triple32_tf(tf.bitwise.bitwise_xor(words[0], _triple32_tf(id_word))),
                     _triple32_tf(words[1] + tf.constant(_SALT, tf.uint32))])


# ------------------------------------------------------------------ the objectives' shared numbers
DEFAULT_NOISE_DENSITY = 0.15       # ProtT5: residues masked; ProtBert: residues selected
# BERT's 80/10/10 on a selected residue, as thresholds on the top 24 bits of its ACTION word:
# below MLM_MASK_BELOW -> [MASK], below MLM_RANDOM_BELOW -> a random standard residue, else unchanged.
MLM_MASK_BELOW = round(0.8 * U24)
MLM_RANDOM_BELOW = round(0.9 * U24)
