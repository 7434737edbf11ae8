"""ProtAlbert's data: its vocabulary table, and `protalbert_mlm` = ProtBert's MLM on translated ids
(the seqio task and the numpy twin give exactly ProtBert's examples, token for token)."""
import itertools

import numpy as np
import pytest

from protlm import models
from protlm.data import arrays
from protlm.data import tokens as tok
from protlm.data.pipeline import get_batch_iterator
from protlm.data.vocabularies import ProtAlbertVocabulary

SEQS = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "ACDEFGHIKLMNPQRSTVWYUXBZO" * 3, "MKV"]


def test_table_and_translation():
    assert tok.PROTALBERT_TOKENS[:5] == ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    assert len(tok.PROTALBERT_TOKENS) == 34 == models.get_config("prot_albert").vocab_size
    for bert_id, albert_id in enumerate(tok.PROTBERT_TO_PROTALBERT):
        name = tok.PROTBERT_TOKENS[bert_id]
        assert tok.PROTALBERT_TOKENS[albert_id] == {"[PAD]": "<pad>", "[UNK]": "<unk>"}.get(name, name)
        assert tok.PROTALBERT_TO_PROTBERT[albert_id] == bert_id
    assert (tok.PROTALBERT_TO_PROTBERT[30:] == tok.PROTBERT_UNK_ID).all()   # reserved ids
    ids = tok.encode_protalbert("MkUb")
    assert tok.protalbert_id_to_piece(ids) == ["M", "K", "X", "X"]
    vocab = ProtAlbertVocabulary()
    assert vocab.vocab_size == 34 and vocab.unk_id == 1 and vocab.mask_id == 4
    assert vocab.encode("M K T") == list(tok.encode_protalbert("MKT"))
    assert vocab.decode([2, 21, 4, 12, 3, 0]) == "M[MASK]K"


def test_numpy_twin_is_protbert_mlm_translated():
    albert = arrays.albert_batch(SEQS, 40, seed=3)
    bert = arrays.bert_batch(SEQS, 40, seed=3)
    np.testing.assert_array_equal(albert["encoder_loss_weights"], bert["encoder_loss_weights"])
    for key in ("encoder_input_tokens", "encoder_target_tokens"):
        np.testing.assert_array_equal(albert[key], tok.PROTBERT_TO_PROTALBERT[bert[key]])
    assert (albert["encoder_input_tokens"][:, 0] == tok.PROTALBERT_CLS_ID).all()
    assert models.get_family(models.get_config("prot_albert_tiny")).array_batch(
        SEQS, {"inputs": 40}, 3).keys() == albert.keys()


@pytest.mark.parametrize("pack", [True, False])
def test_task_is_protbert_mlm_translated(small_tasks, pack):
    """Same corpus, seed and lengths: every protalbert_mlm batch is the protbert_mlm batch with its
    token ids mapped through `PROTBERT_TO_PROTALBERT` (one implementation of the masking)."""
    lengths = {"inputs": 128}
    albert = list(itertools.islice(get_batch_iterator("protalbert_mlm", lengths, 4, seed=7, pack=pack), 3))
    bert = list(itertools.islice(get_batch_iterator("protbert_mlm", lengths, 4, seed=7, pack=pack), 3))
    for a, b in zip(albert, bert, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            want = tok.PROTBERT_TO_PROTALBERT[b[key]] if key in (
                "encoder_input_tokens", "encoder_target_tokens") else b[key]
            np.testing.assert_array_equal(a[key], want, err_msg=key)
        assert (a["encoder_input_tokens"] == tok.PROTALBERT_MASK_ID).sum() > 0
        assert a["encoder_input_tokens"].max() < 30   # reserved ids are never produced
