"""Exported tokenizer files give protlm's ids, through sentencepiece and transformers 5's paths."""
from __future__ import annotations

import numpy as np
import pytest

from protlm import models
from protlm.data import tokens
from protlm.hf import bert as hf_bert
from protlm.hf import t5 as hf_t5
from protlm.hf import tokenizers

from .conftest import pad, token_rows

RARE = "MKUZOBXACDEFGHIKLMNPQRSTVWY"  # every letter both vocabularies know
T5 = models.get_config("prot_t5_tiny")
BERT = models.get_config("prot_bert_tiny", max_position_embeddings=40000)


@pytest.fixture(scope="module")
def seqs(proteins) -> list[str]:
    return proteins + [RARE]


def test_spiece_model_pieces_in_prott5_order(tmp_path, seqs):
    import sentencepiece as spm
    hf_t5.write_tokenizer(str(tmp_path), T5)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "spiece.model"))
    assert sp.get_piece_size() == 28
    assert [sp.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    assert [sp.id_to_piece(i) for i in range(3, 28)] == ["\u2581" + t for t in tokens.PROTT5_TOKENS[3:28]]
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    for seq in seqs:
        assert sp.encode(tokenizers.hf_input_text(seq)) + [1] == token_rows(T5, [seq])[0]


def test_hf_input_text_maps_rare_residues():
    assert tokenizers.hf_input_text("MkUzOB") == "M K X X X X"


@pytest.mark.hf
def test_t5_tokenizer_from_spiece_and_from_tokenizer_json(tmp_path, seqs):
    import transformers
    hf_t5.write_tokenizer(str(tmp_path / "spm"), T5)
    expected = pad(token_rows(T5, seqs))
    texts = [tokenizers.hf_input_text(s) for s in seqs]
    # Path 1: only spiece.model (+ configs), converted by transformers on load.
    tok = transformers.T5Tokenizer.from_pretrained(str(tmp_path / "spm"))
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "spm"))
    assert type(auto).__name__ == "T5Tokenizer"
    # Path 2: the tokenizer.json transformers writes, loaded without spiece.model.
    tok.save_pretrained(str(tmp_path / "json"))
    (tmp_path / "json" / "spiece.model").unlink(missing_ok=True)
    from_json = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "json"))
    for t in (tok, auto, from_json):
        assert len(t) == tokens.PROTT5_VOCAB_SIZE
        ids = t(texts, padding=True, return_tensors="np").input_ids
        np.testing.assert_array_equal(ids, expected)
        assert t.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_99>"]) == [127, 28]
        assert (t.pad_token_id, t.eos_token_id, t.unk_token_id) == (0, 1, 2)
        assert t.decode(ids[0], skip_special_tokens=True).replace(" ", "") == seqs[0]


@pytest.mark.hf
def test_bert_tokenizer(tmp_path, seqs):
    import transformers
    hf_bert.write_tokenizer(str(tmp_path), BERT)
    assert (tmp_path / "vocab.txt").read_text().split("\n")[:-1] == tokens.PROTBERT_TOKENS
    expected = pad(token_rows(BERT, seqs))
    texts = [tokenizers.hf_input_text(s) for s in seqs]
    for t in (transformers.BertTokenizer.from_pretrained(str(tmp_path)),
              transformers.AutoTokenizer.from_pretrained(str(tmp_path))):
        np.testing.assert_array_equal(t(texts, padding=True, return_tensors="np").input_ids,
                                      expected)
        assert (t.pad_token_id, t.mask_token_id, t.cls_token_id) == (0, 4, 2)
