"""Objective preprocessors: exact formats, crop lengths, determinism, and mask statistics on real data."""
import itertools

import numpy as np
import pytest
import seqio
import tensorflow as tf

from protlm.data import preprocessors as prep
from protlm.data import random_bits as rb
from protlm.data import tokens as tok
from protlm.data.fasta import read_fasta

SEQ = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKLSDGHRHDVRAPDYDDWSTPSELGHAGLNGDILVWNPVLEDAFELSSMGIRVDADTLKHQLALTGDEDRLELEWHQALLRGEMPQTIGGGIGQSRLTMLLLQLPHIGQVQCGVWPAACRESVPALL"


def _seed(a, b=0):
    """An example key (uint32 [2])."""
    return tf.constant(rb.row_key_np(a, b))


def test_prott5_denoising_exact_format():
    tokens = tf.constant(tok.encode_prott5(SEQ))
    out = {k: v.numpy() for k, v in prep.span_denoise_example(tokens, _seed(1), 100).items()}
    src = out["source_tokens"]
    assert len(src) == 100
    start = SEQ.find(tok.decode_prott5(src))
    assert start >= 0  # a contiguous window of the sequence
    np.testing.assert_array_equal(out["targets"], np.append(src, tok.PROTT5_EOS_ID))
    inputs = out["inputs"]
    assert len(inputs) == 101 and inputs[-1] == tok.PROTT5_EOS_ID
    masked = inputs[:-1] != src
    assert masked.sum() == 15  # floor(0.15 * 100 + 0.5)
    # i-th masked residue -> <extra_id_i>, in order; everything else unchanged.
    np.testing.assert_array_equal(inputs[:-1][masked], 127 - np.arange(15))
    np.testing.assert_array_equal(inputs[:-1][~masked], src[~masked])
    pieces = tok.prott5_id_to_piece(inputs)
    assert [p for p in pieces if p.startswith("<extra")] == [f"<extra_id_{i}>" for i in range(15)]


def test_prott5_crop_and_sentinel_cap():
    tokens = tf.constant(tok.encode_prott5(SEQ * 3))  # 1083 residues
    out = prep.span_denoise_example(tokens, _seed(3), None)
    assert out["inputs"].shape[0] == len(SEQ) * 3 + 1
    assert int(tf.reduce_sum(tf.cast(out["inputs"] >= tok.PROTT5_LAST_SENTINEL_ID, tf.int32))) == 100  # capped
    short = prep.span_denoise_example(tf.constant(tok.encode_prott5("MK")), _seed(3), 511)
    assert short["inputs"].numpy().tolist() in ([127, 14, 1], [19, 127, 1])
    one = prep.span_denoise_example(tf.constant(tok.encode_prott5("M")), _seed(3), 511)
    assert one["inputs"].numpy().tolist() == [19, 1]


def test_crop_is_uniform_window():
    tokens = tf.range(1000, dtype=tf.int32)
    starts = {int(prep.random_crop(tokens, 10, _seed(s, 7))[0]) for s in range(200)}
    assert len(starts) > 150 and min(starts) >= 0 and max(starts) <= 990


def test_span_corruption_reconstructs_source():
    tokens = tf.constant(tok.encode_prott5(SEQ))
    crop_len, targets_len = prep.random_spans_helper(128, 0.15, 3.0)
    assert crop_len > 128  # corruption shortens: more raw residues fit
    out = {k: v.numpy() for k, v in prep.span_corrupt_example(tokens, _seed(5), crop_len, 0.15, 3.0).items()}
    assert len(out["inputs"]) == 128 and len(out["targets"]) == targets_len
    assert out["inputs"][-1] == 1 and out["targets"][-1] == 1
    # Targets are sentinel-only: sentinels followed by the dropped spans.
    assert out["targets"][0] == 127
    # Rebuild the source from inputs + targets.
    spans, cur = {}, None
    for t in out["targets"][:-1]:
        if t >= 28:
            cur = t
            spans[cur] = []
        else:
            spans[cur].append(t)
    rebuilt = []
    for t in out["inputs"][:-1]:
        rebuilt.extend(spans[t] if t >= 28 else [t])
    np.testing.assert_array_equal(rebuilt, out["source_tokens"])
    n_noise = sum(len(v) for v in spans.values())
    assert n_noise == round(crop_len * 0.15)


def test_span_corruption_rejects_too_many_sentinels():
    ds = tf.data.Dataset.from_tensors({"id": tf.constant("a"), "source_tokens": tf.constant([3, 4], tf.int32)})
    with pytest.raises(ValueError, match="sentinels"):
        prep.span_corruption(ds, {"inputs": 4096, "targets": 4096}, mean_noise_span_length=1.0)


def test_mlm_exact_format():
    tokens = tf.constant(tok.encode_protbert(SEQ))
    out = {k: v.numpy() for k, v in prep.mlm_example(tokens, _seed(7), 200).items()}
    src = out["source_tokens"]
    assert len(src) == 200
    assert out["inputs"][0] == tok.PROTBERT_CLS_ID and out["inputs"][-1] == tok.PROTBERT_SEP_ID
    np.testing.assert_array_equal(out["targets"], np.concatenate([[2], src, [3]]))
    w = out["loss_weights"]
    assert w[0] == 0 and w[-1] == 0 and w.sum() == 30
    changed = out["inputs"] != out["targets"]
    assert not (changed & (w == 0)).any()  # only selected positions change


def _real_examples(pretraining_fasta, fn, min_residues):
    """Applies `fn(tokens, seed)` to real records until `min_residues` residues were processed."""
    outs, total = [], 0
    for i, rec in enumerate(itertools.islice(read_fasta(pretraining_fasta[1]), 2000)):
        out = fn(rec.sequence, _seed(i, 1))
        outs.append({k: v.numpy() for k, v in out.items()})
        total += len(outs[-1]["source_tokens"])
        if total >= min_residues:
            break
    return outs, total


def test_prott5_mask_statistics_real_data(pretraining_fasta):
    outs, total = _real_examples(
        pretraining_fasta, lambda s, seed: prep.span_denoise_example(tf.constant(tok.encode_prott5(s)), seed, 511), 120_000)
    assert total >= 100_000
    masked = sum(int((o["inputs"][:-1] >= tok.PROTT5_LAST_SENTINEL_ID).sum()) for o in outs)
    assert abs(masked / total - 0.15) < 0.005, masked / total
    assert max(len(o["inputs"]) for o in outs) == 512


def test_mlm_statistics_real_data(pretraining_fasta):
    outs, total = _real_examples(
        pretraining_fasta, lambda s, seed: prep.mlm_example(tf.constant(tok.encode_protbert(s)), seed, 510), 150_000)
    assert total >= 100_000
    sel = mask = same = rand = 0
    for o in outs:
        w = o["loss_weights"].astype(bool)
        inp, tgt = o["inputs"][w], o["targets"][w]
        sel += w.sum()
        mask += (inp == tok.PROTBERT_MASK_ID).sum()
        same += (inp == tgt).sum()
        rand += ((inp != tok.PROTBERT_MASK_ID) & (inp != tgt)).sum()
        assert set(inp[inp != tok.PROTBERT_MASK_ID]) <= set(range(5, 30))
    assert abs(sel / total - 0.15) < 0.005
    assert abs(mask / sel - 0.80) < 0.01
    # 10 % random (a random standard residue equals the original 1/20 of the time) + 10 % unchanged.
    assert abs((sel - mask) / sel - 0.20) < 0.01
    assert abs(rand / sel - 0.10 * 19 / 20) < 0.01
    assert abs(same / sel - (0.10 + 0.10 / 20)) < 0.01


def _task_examples(ds_fn, seed):
    with seqio.utils.map_seed_manager(seed):
        ds = ds_fn()
    return [{k: v.tolist() if hasattr(v, "tolist") else v for k, v in ex.items()} for ex in ds.as_numpy_iterator()]


def test_seqio_seeded_map_determinism():
    base = tf.data.Dataset.from_tensor_slices(
        {"id": ["a", "b", "c"], "source_tokens": tf.ragged.constant([[3, 4, 5, 6, 7, 8, 9, 10] * 4] * 3)})
    base = base.map(lambda ex: {"id": ex["id"], "source_tokens": ex["source_tokens"].to_tensor() if hasattr(
        ex["source_tokens"], "to_tensor") else ex["source_tokens"]})
    run = lambda seed: _task_examples(lambda: prep.prott5_span_denoising(base, {"inputs": 16, "targets": 16}), seed)  # noqa: E731
    a, b, c = run(1), run(1), run(2)
    assert a == b
    assert a != c
    # Same tokens, different record ids -> different masks within one stream.
    assert a[0]["inputs"] != a[1]["inputs"] or a[1]["inputs"] != a[2]["inputs"]
