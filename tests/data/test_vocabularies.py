"""Vocabulary tables (against PROTTRANS_FACTS.md section 2 and hf_reference/) and round trips."""
import json

import numpy as np
import pytest
import tensorflow as tf

from protlm.data import tokens as tok
from protlm.data.vocabularies import ProtBertVocabulary, ProtT5Vocabulary

# PROTTRANS_FACTS.md section 2, written out in full.
FACTS_T5_HEAD = ["<pad>", "</s>", "<unk>"] + "A L G V S R E D T I P K F Q N Y M H W C X B O U Z".split()
FACTS_BERT = "[PAD] [UNK] [CLS] [SEP] [MASK] L A G V E S I K R D T P N Q F Y M H C W X U B Z O".split()


def test_prott5_table_matches_facts_and_reference(data_root):
    assert len(tok.PROTT5_TOKENS) == 128
    assert tok.PROTT5_TOKENS[:28] == FACTS_T5_HEAD
    for i in range(100):
        assert tok.PROTT5_TOKENS[127 - i] == f"<extra_id_{i}>"
        assert tok.prott5_sentinel_id(i) == 127 - i
    ref = json.loads((data_root / "hf_reference/prot_t5_xl_uniref50/token_ids.reconstructed.json").read_text())["vocab"]
    assert len(ref) == 128
    for piece, idx in ref.items():
        assert tok.PROTT5_TOKENS[idx] == piece.lstrip("\u2581"), (piece, idx)


def test_protbert_table_matches_facts_and_reference(data_root):
    assert tok.PROTBERT_TOKENS == FACTS_BERT
    ref = (data_root / "hf_reference/prot_bert/vocab.reconstructed.txt").read_text().split()
    assert tok.PROTBERT_TOKENS == ref
    # Model-card fill-mask ids.
    assert [tok.PROTBERT_TOKENS[i] for i in (5, 6, 8, 10, 11, 12, 15)] == list("LAVSIKT")
    assert sorted(tok.PROTBERT_TOKENS[i] for i in tok.PROTBERT_STANDARD_RESIDUE_IDS) == sorted("ACDEFGHIKLMNPQRSTVWY")


def test_special_ids():
    t5, bert = ProtT5Vocabulary(), ProtBertVocabulary()
    assert (t5.pad_id, t5.eos_id, t5.unk_id, t5.vocab_size, t5.extra_ids) == (0, 1, 2, 128, 100)
    assert t5.tokens == tok.PROTT5_TOKENS
    assert (bert.pad_id, bert.unk_id, bert.cls_id, bert.sep_id, bert.mask_id, bert.vocab_size) == (0, 1, 2, 3, 4, 30)
    assert bert.eos_id is None


def test_encode_numpy_and_rare_policy():
    np.testing.assert_array_equal(tok.encode_prott5("MKtA"), [19, 14, 11, 3])
    np.testing.assert_array_equal(tok.encode_protbert("MKTA"), [21, 12, 15, 6])
    # Default ProtTrans policy U Z O B -> X; configurable.
    np.testing.assert_array_equal(tok.encode_prott5("UZOB"), [23] * 4)
    np.testing.assert_array_equal(tok.encode_prott5("UZOB", rare_residue_map={}), [26, 27, 25, 24])
    np.testing.assert_array_equal(tok.encode_protbert("UZOB", rare_residue_map={"U": "C"}), [23, 28, 29, 27])
    assert tok.encode_prott5("M1").tolist() == [19, 2]  # non-letter -> <unk>
    assert tok.encode_prott5("MK").dtype == np.int32
    with pytest.raises(ValueError, match="not a residue"):
        tok.encode_prott5("M", rare_residue_map={"U": "!"})


def test_decode_pieces():
    assert tok.prott5_id_to_piece([19, 127, 28, 1, 0]) == ["M", "<extra_id_0>", "<extra_id_99>", "</s>", "<pad>"]
    assert tok.decode_prott5([19, 127, 14, 1, 3]) == "M<extra_id_0>K"
    assert tok.protbert_id_to_piece([2, 21, 4, 3]) == ["[CLS]", "M", "[MASK]", "[SEP]"]
    assert tok.decode_protbert([2, 21, 4, 3, 0]) == "M[MASK]"
    with pytest.raises(ValueError, match="out of range"):
        tok.prott5_id_to_piece([128])


@pytest.mark.parametrize("vocab_cls", [ProtT5Vocabulary, ProtBertVocabulary])
def test_round_trip_python_and_tf(vocab_cls):
    vocab = vocab_cls({})
    seq = "".join(tok.PROTT5_RESIDUES) * 3
    ids = vocab.encode(seq)
    assert len(ids) == len(seq) and vocab.decode(ids) == seq
    tf_ids = vocab.encode_tf(tf.constant(seq)).numpy().tolist()
    assert tf_ids == ids
    assert vocab.encode_tf(tf.constant(" ".join(seq))).numpy().tolist() == ids  # HF spaced form
    assert vocab.decode_tf(tf.constant(ids)).numpy().decode() == seq
    # Batched decode with padding.
    batch = tf.constant([ids[:5] + [0, 0], ids[5:12]])
    assert [s.decode() for s in vocab.decode_tf(batch).numpy()] == [seq[:5], seq[5:12]]


def test_t5_decode_stops_at_eos_and_keeps_sentinels():
    vocab = ProtT5Vocabulary()
    ids = [19, 127, 126, 1, 14, 14]
    assert vocab.decode(ids) == "M<extra_id_0><extra_id_1>"
    assert vocab.decode_tf(tf.constant(ids)).numpy().decode() == "M<extra_id_0><extra_id_1>"
    assert vocab.encode_tf(tf.constant("mu")).numpy().tolist() == [19, 23]  # lower case, U -> X


def test_vocab_equality():
    assert ProtT5Vocabulary() == ProtT5Vocabulary()
    assert ProtT5Vocabulary() != ProtT5Vocabulary({})
    assert ProtT5Vocabulary() != ProtBertVocabulary()


def test_tf_free_modules_import_without_tensorflow():
    """tokens / splits / fasta must work on the GPU machine, where TensorFlow and seqio are absent."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['seqio'] = None\n"
            "import protlm.data, protlm.data.tokens as t, protlm.data.splits, protlm.data.fasta\n"
            "assert t.encode_prott5('MK').tolist() == [19, 14]\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
