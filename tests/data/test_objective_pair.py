"""The one numpy/TF pair of each ProtTrans objective gives identical examples for the same key."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from protlm.data import arrays
from protlm.data import preprocessors as prep
from protlm.data import random_bits as rb
from protlm.data import tokens as tok
from protlm.data.fasta import read_fasta

PAIRS = {
    "prott5_span_denoising": (arrays.span_denoise_example, prep.span_denoise_example, tok.encode_prott5),
    "protbert_mlm": (arrays.mlm_example, prep.mlm_example, tok.encode_protbert),
}


@pytest.fixture(scope="module")
def proteins(pretraining_fasta):
    recs = itertools.islice(read_fasta(pretraining_fasta[-1]), 500, 740)
    return [r.sequence for r in recs] + ["M", "MK", "MKT", "W" * 700]


def test_bits_identical_in_numpy_and_tf():
    for seed, row in ((0, 0), (1, 2), (2**40 + 3, 99), (-5, 7)):
        key = rb.row_key_np(seed, row)
        for stream in (rb.CROP, rb.SELECT, rb.ACTION, rb.RANDOM_RESIDUE):
            np.testing.assert_array_equal(rb.bits_np(key, stream, 1000),
                                          rb.bits_tf(tf.constant(key), stream, 1000).numpy())
    words = rb.bits_np(rb.row_key_np(3, 0), rb.SELECT, 200_000)
    assert abs(words.astype(np.float64).mean() / 2**32 - 0.5) < 0.005   # uniform words
    assert len(np.unique(words)) > 199_990


@pytest.mark.parametrize("objective", sorted(PAIRS))
@pytest.mark.parametrize("crop_length", [None, 126, 30])
def test_numpy_and_tf_examples_identical(proteins, objective, crop_length):
    fn_np, fn_tf, encode = PAIRS[objective]
    for i, seq in enumerate(proteins):
        key = rb.row_key_np(11, i)
        tokens = encode(seq)
        a = fn_np(tokens, key, crop_length)
        b = fn_tf(tf.constant(tokens), tf.constant(key), crop_length)
        assert set(a) == set(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k].numpy(), err_msg=f"{objective} {k} protein {i}")


def test_batches_are_rows_of_the_example_functions(proteins):
    seqs = proteins[:6]
    t5 = arrays.t5_batch(seqs, 40, seed=5)
    bert = arrays.bert_batch(seqs, 40, seed=5)
    for i, s in enumerate(seqs):
        ex = prep.span_denoise_example(tf.constant(tok.encode_prott5(s)), tf.constant(rb.row_key_np(5, i)), 39)
        m = len(ex["targets"])
        np.testing.assert_array_equal(t5["encoder_input_tokens"][i, :m], ex["inputs"].numpy())
        np.testing.assert_array_equal(t5["decoder_target_tokens"][i, :m], ex["targets"].numpy())
        assert not t5["encoder_input_tokens"][i, m:].any()
        mx = prep.mlm_example(tf.constant(tok.encode_protbert(s)), tf.constant(rb.row_key_np(5, i)), 38)
        m = len(mx["targets"])
        np.testing.assert_array_equal(bert["encoder_input_tokens"][i, :m], mx["inputs"].numpy())
        np.testing.assert_array_equal(bert["encoder_loss_weights"][i, :m], mx["loss_weights"].numpy())


def test_one_masking_rule_exact_count_and_unique_sentinels(proteins):
    """The paper's rule in the numpy twin too: exactly floor(15 % + 0.5), <extra_id_0..k-1> in order."""
    batch = arrays.t5_batch(proteins[:50], 128, seed=0)
    for row in range(50):
        n = int((batch["decoder_target_tokens"][row] > 0).sum()) - 1   # residues (without EOS)
        enc = batch["encoder_input_tokens"][row, :n]
        sentinels = enc[enc >= tok.PROTT5_LAST_SENTINEL_ID]
        assert len(sentinels) == arrays.num_masks(n, 0.15, tok.PROTT5_NUM_SENTINELS)
        np.testing.assert_array_equal(sentinels, 127 - np.arange(len(sentinels)))
